"""REST resources of the bridge (DRF) and the original RADICAL Edge bridge routes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..conf import edge_settings
from ..models import Edge
from ..selectors import edge_list_for_user
from .serializers import EdgeSerializer


class EdgeViewSet(viewsets.ReadOnlyModelViewSet):
    """Edges the caller may see. Unknown and forbidden edges are both 404."""

    serializer_class = EdgeSerializer
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9][a-z0-9._-]{0,62}"

    def get_queryset(self):
        return edge_list_for_user(user=self.request.user)


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
        edges = {}
        for edge in edge_list_for_user(user=request.user):
            if not edge.is_online:
                continue
            edges[edge.name] = {
                "endpoint": {
                    "name": edge.name,
                    "url": f"{bridge_url(request)}/{edge.name}",
                    "host": edge.host,
                    "agent_version": edge.agent_version,
                    "connected_at": edge.connected_at,
                    "last_seen": edge.last_seen,
                    "owner": edge.owner.username if edge.owner else None,
                },
                "plugins": plugin_summary(edge),
            }
        return Response({"data": {"bridge": {"url": bridge_url(request)}, "edges": edges}})


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
