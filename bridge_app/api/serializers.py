"""DRF serializers of bridge resources."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import serializers

from ..models import ApiToken, CallRecord, Edge, EdgeGrant, PluginRegistration


class PluginSerializer(serializers.ModelSerializer):
    class Meta:
        model = PluginRegistration
        fields = ["name", "version", "description", "routes", "ui_schema"]


class EdgeSerializer(serializers.ModelSerializer):
    online = serializers.BooleanField(source="is_online", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    plugins = PluginSerializer(many=True, read_only=True)
    parent = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Edge
        fields = [
            "name", "owner", "description", "online", "suspended", "last_seen", "connected_at",
            "disconnected_at", "host", "agent_version", "protocol_version", "plugins", "created_at",
            "parent", "job",
        ]
        read_only_fields = fields


class ChildLaunchSerializer(serializers.Serializer):
    """What ``POST /api/v1/edges/{parent}/children`` takes: a child edge on compute nodes."""

    executor = serializers.CharField(max_length=40, default="slurm",
                                     help_text="psij executor: slurm, pbs, lsf, local, …")
    queue = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    account = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    nodes = serializers.IntegerField(min_value=1, max_value=100_000, default=1)
    duration = serializers.FloatField(min_value=10, max_value=366 * 86400, help_text="walltime, seconds")
    plugins = serializers.ListField(child=serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,200}$"), required=False,
                                    max_length=64, help_text="the child's plugins (default: the usual set)")
    name = serializers.RegexField(r"^[a-z0-9][a-z0-9_-]{0,30}$", required=False, allow_null=True, default=None,
                                  help_text="suffix of the child's name, {parent}.{name} (default: random)")
    bye_margin = serializers.FloatField(min_value=0, required=False, allow_null=True, default=None,
                                        help_text="seconds before the walltime the child says bye")
    connectivity = serializers.ChoiceField(choices=["auto", "direct", "relay"], default="auto",
                                           help_text="direct: the child dials the bridge; relay: through the "
                                           "parent; auto: direct, else the relay")
    custom_attributes = serializers.DictField(required=False, default=dict)

    def validate(self, attrs):
        margin = attrs.get("bye_margin")
        if margin is not None and margin >= attrs["duration"]:
            raise serializers.ValidationError({"bye_margin": "must be less than duration"})
        return attrs


class GrantSerializer(serializers.ModelSerializer):
    """A role on an edge. Give ``user`` (a username) or ``group`` (a group name)."""

    user = serializers.SlugRelatedField(slug_field="username", queryset=get_user_model().objects.filter(is_active=True),
                                        required=False, allow_null=True)
    group = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all(), required=False,
                                         allow_null=True)
    role = serializers.ChoiceField(choices=EdgeGrant.Role.choices)

    class Meta:
        model = EdgeGrant
        fields = ["id", "user", "group", "role", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate(self, attrs: dict) -> dict:
        if (attrs.get("user") is None) == (attrs.get("group") is None):
            raise serializers.ValidationError("give exactly one of 'user' and 'group'")
        return attrs


class DisconnectSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                   help_text="told to the agent (and logged there)")
    retry = serializers.BooleanField(required=False, default=True,
                                     help_text="whether the agent may reconnect at once")


class CallRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = CallRecord
        fields = ["at", "username", "edge", "plugin", "method", "path", "status", "duration_ms", "bytes_in",
                  "bytes_out", "request_id", "client"]
        read_only_fields = fields


class ApiTokenSerializer(serializers.ModelSerializer):
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "prefix", "name", "scope", "created_at", "last_used_at", "expires_at", "revoked_at", "active"]
        read_only_fields = fields
