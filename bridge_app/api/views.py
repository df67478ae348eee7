"""REST resources of the bridge (DRF) and the original RADICAL Edge bridge routes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, pagination, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..conf import edge_settings
from ..domain import children, services
from ..domain.selectors import api_token_list_for_user, call_record_list, edge_list_for_user, grant_list_for_edge
from ..models import ApiToken, Edge
from .permissions import IsEdgeManager, IsSiteAdmin, TokenScope
from .serializers import (
    ApiTokenSerializer,
    CallRecordSerializer,
    ChildLaunchSerializer,
    DisconnectSerializer,
    EdgeSerializer,
    GrantSerializer,
)

# Every action below adds its own policy to these (DRF replaces, not extends, the defaults).
BASE_PERMISSIONS = [permissions.IsAuthenticated, TokenScope]


class CallPagination(pagination.CursorPagination):
    ordering = "-at"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"


class EdgeViewSet(viewsets.ReadOnlyModelViewSet):
    """Edges the caller may see. Unknown and forbidden edges are both 404.

    An edge's owner and site admins also suspend and resume it, share it (grants) and see
    who used it (calls); site admins disconnect any edge.
    """

    serializer_class = EdgeSerializer
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9][a-z0-9._-]{0,62}"

    def get_queryset(self):
        return edge_list_for_user(user=self.request.user)

    @extend_schema(summary="Suspend an edge (owner or admin)", request=None, responses={200: EdgeSerializer})
    @action(detail=True, methods=["post"], permission_classes=[*BASE_PERMISSIONS, IsEdgeManager])
    def suspend(self, request: Request, name: str) -> Response:
        """The proxy answers 503 ``edge_suspended``; a connected agent is disconnected at
        once and refused until the edge is resumed."""
        edge = self.get_object()
        services.edge_suspend(edge=edge, actor=request.user)
        return Response(EdgeSerializer(edge).data)

    @extend_schema(summary="Resume a suspended edge (owner or admin)", request=None, responses={200: EdgeSerializer})
    @action(detail=True, methods=["post"], permission_classes=[*BASE_PERMISSIONS, IsEdgeManager])
    def resume(self, request: Request, name: str) -> Response:
        edge = self.get_object()
        services.edge_resume(edge=edge, actor=request.user)
        return Response(EdgeSerializer(edge).data)

    @extend_schema(
        summary="Disconnect an edge now (site admins)", request=DisconnectSerializer,
        responses={200: inline_serializer("Disconnected", {"disconnected": serializers.BooleanField()})},
    )
    @action(detail=True, methods=["post"], permission_classes=[*BASE_PERMISSIONS, IsSiteAdmin])
    def disconnect(self, request: Request, name: str) -> Response:
        """The agent is told why (``bye`` with reason ``disconnected_by_admin``); with
        ``retry: false`` it does not reconnect at once. ``disconnected`` is false if the
        edge was not connected."""
        edge = self.get_object()
        form = DisconnectSerializer(data=request.data or {})
        form.is_valid(raise_exception=True)
        done = services.edge_kick(edge=edge, detail=form.validated_data.get("detail", ""),
                                  retry=form.validated_data["retry"], actor=request.user)
        return Response({"disconnected": done})

    @extend_schema(summary="Who may use this edge (owner or admin)", responses={200: GrantSerializer(many=True)},
                   methods=["GET"])
    @extend_schema(summary="Give a user or group a role on this edge, replacing any they had (owner or admin)",
                   request=GrantSerializer, responses={201: GrantSerializer}, methods=["POST"])
    @extend_schema(summary="Take a user's or group's role away (owner or admin)", request=None,
                   responses={204: None}, methods=["DELETE"],
                   parameters=[OpenApiParameter("user", str, description="username"),
                               OpenApiParameter("group", str, description="group name")])
    @action(detail=True, methods=["get", "post", "delete"], permission_classes=[*BASE_PERMISSIONS, IsEdgeManager],
            serializer_class=GrantSerializer, pagination_class=None)
    def grants(self, request: Request, name: str) -> Response:
        # Grants are addressed by grantee, not as grants/{id}: three path segments under
        # /api/v1/edges/ are the proxy's /{edge}/{plugin}/{route}.
        edge = self.get_object()
        if request.method == "GET":
            return Response(GrantSerializer(grant_list_for_edge(edge=edge), many=True).data)
        if request.method == "DELETE":
            return self._grant_remove(request, edge)
        form = GrantSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            data = form.validated_data
            grant = services.grant_set(edge=edge, role=data["role"], user=data.get("user"), group=data.get("group"),
                                       actor=request.user)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError("; ".join(exc.messages)) from None
        return Response(GrantSerializer(grant).data, status=status.HTTP_201_CREATED)

    def _grant_remove(self, request: Request, edge: Edge) -> Response:
        username, group_name = request.query_params.get("user"), request.query_params.get("group")
        if bool(username) == bool(group_name):
            raise exceptions.ValidationError("give exactly one of ?user= and ?group=")
        grants = grant_list_for_edge(edge=edge)
        grant = grants.filter(user__username=username).first() if username else \
            grants.filter(group__name=group_name).first()
        if grant is None:
            raise exceptions.NotFound(f"{username or 'group ' + group_name} has no role on edge '{edge.name}'")
        services.grant_remove(edge=edge, user=grant.user, group=grant.group, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="The child edges of this edge (edges on compute nodes)",
                   responses={200: EdgeSerializer(many=True)}, methods=["GET"])
    @extend_schema(summary="Start a child edge on compute nodes: a batch job that runs an agent (owner or admin)",
                   request=ChildLaunchSerializer, responses={201: EdgeSerializer}, methods=["POST"])
    @action(detail=True, methods=["get", "post"], permission_classes=[*BASE_PERMISSIONS],
            serializer_class=ChildLaunchSerializer, pagination_class=None)
    def children(self, request: Request, name: str) -> Response:
        """``POST`` submits, through this edge's ``edges`` and ``psij`` plugins, a batch job
        running a child agent named ``{name}.{suffix}``; the answer comes once the job is
        submitted (``job.state`` QUEUED); the child registers when the job starts."""
        parent = self.get_object()
        if request.method == "GET":
            rows = self.get_queryset().filter(parent=parent).order_by("-created_at")
            return Response(EdgeSerializer(rows, many=True).data)
        if not IsEdgeManager().has_object_permission(request, self, parent):
            raise exceptions.PermissionDenied(IsEdgeManager.message)
        form = ChildLaunchSerializer(data=request.data or {})
        form.is_valid(raise_exception=True)
        try:
            child = children.child_edge_launch(parent=parent, user=request.user, token=request.auth,
                                               launch=form.validated_data)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError("; ".join(exc.messages)) from None
        except children.LaunchFailed as exc:
            return Response({"error": exc.error, "detail": exc.detail}, status=exc.status)
        return Response(EdgeSerializer(child).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Stop a child edge: cancel its batch job and revoke its token (owner or admin)",
                   request=None, responses={200: EdgeSerializer})
    @action(detail=True, methods=["post"], permission_classes=[*BASE_PERMISSIONS, IsEdgeManager])
    def stop(self, request: Request, name: str) -> Response:
        """The parent cancels the job (the child's agent says bye); the child's token is
        revoked at once whether or not the parent could be reached."""
        child = self.get_object()
        if child.parent_id is None:
            raise exceptions.ValidationError(f"edge '{child.name}' is not a child edge; only those can be stopped")
        child = children.child_edge_stop(child=child, user=request.user, token=request.auth)
        return Response(EdgeSerializer(child).data)

    @extend_schema(summary="Who used this edge: its proxied calls, newest first (owner or admin)",
                   responses={200: CallRecordSerializer(many=True)})
    @action(detail=True, methods=["get"], permission_classes=[*BASE_PERMISSIONS, IsEdgeManager],
            serializer_class=CallRecordSerializer, pagination_class=CallPagination)
    def calls(self, request: Request, name: str) -> Response:
        edge = self.get_object()
        page = self.paginate_queryset(call_record_list(edge=edge.name))
        return self.get_paginated_response(CallRecordSerializer(page, many=True).data)


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                      viewsets.GenericViewSet):
    """The caller's own API tokens (never their secrets). ``DELETE`` revokes one at once.
    New tokens are issued in the portal (Tokens page), so a stolen token cannot mint more."""

    serializer_class = ApiTokenSerializer
    pagination_class = None
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular inspecting the view
            return ApiToken.objects.none()
        return api_token_list_for_user(user=self.request.user)

    @extend_schema(summary="Revoke one of your API tokens", responses={204: None})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        services.api_token_revoke(token=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CallRecordViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The audit trail of proxied calls (site admins), filtered by ``?edge=`` and ``?user=``."""

    serializer_class = CallRecordSerializer
    pagination_class = CallPagination
    permission_classes = [*BASE_PERMISSIONS, IsSiteAdmin]

    @extend_schema(parameters=[OpenApiParameter("edge", str), OpenApiParameter("user", str)])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        return call_record_list(edge=params.get("edge") or None, username=params.get("user") or None)


def bridge_url(request: Request) -> str:
    return edge_settings.PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")


def plugin_summary(edge: Edge) -> dict[str, Any]:
    return {
        p.name: {
            "type": p.name,
            "namespace": f"/{edge.name}/{p.name}",
            "version": p.version,
            "description": p.description,
            "ui_config": p.ui_schema or {},
        }
        for p in edge.plugins.all()
    }


def edge_list_data(*, user: Any, url: str) -> dict[str, Any]:
    """The ``data`` of ``POST /edge/list`` for ``user``: ``{"bridge": {"url"}, "edges": {NAME:
    {"endpoint", "plugins"}}}``, connected edges only (also the original SDK's topology
    event, ``bridge_app.calls.compat``)."""
    edges = {}
    for edge in edge_list_for_user(user=user):
        if not edge.is_online:
            continue
        edges[edge.name] = {
            "endpoint": {
                "name": edge.name,
                "url": f"{url}/{edge.name}",
                "host": edge.host,
                "agent_version": edge.agent_version,
                "connected_at": edge.connected_at,
                "last_seen": edge.last_seen,
                "owner": edge.owner.username if edge.owner else None,
            },
            "plugins": plugin_summary(edge),
        }
    return {"bridge": {"url": url}, "edges": edges}


class EdgeListView(APIView):
    """``POST /edge/list``: the connected edges the caller may use, with their plugins
    (the original RADICAL Edge shape)."""

    @extend_schema(
        summary="List connected edges and their plugins (original RADICAL Edge shape)",
        request=None,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description=(
            '{"data": {"bridge": {"url"}, "edges": {NAME: {"endpoint": {...}, "plugins": '
            '{PLUGIN: {"type", "namespace", "version", "ui_config"}}}}}}'))},
    )
    def post(self, request: Request) -> Response:
        return Response({"data": edge_list_data(user=request.user, url=bridge_url(request))})


class EdgesView(APIView):
    """``GET /edges``: every edge the caller may see, connected or not."""

    @extend_schema(
        summary="List visible edges with their connection state",
        responses={200: inline_serializer("EdgesLegacy", {
            "edges": serializers.ListField(child=serializers.DictField()),
            "total": serializers.IntegerField(),
        })},
    )
    def get(self, request: Request) -> Response:
        rows = []
        for edge in edge_list_for_user(user=request.user):
            names = [p.name for p in edge.plugins.all()]
            rows.append({
                "name": edge.name,
                "plugins": names,
                "connected": edge.is_online,
                "plugin_count": len(names),
                "host": edge.host,
                "last_seen": edge.last_seen,
                "suspended": edge.suspended,
            })
        return Response({"edges": rows, "total": len(rows)})
