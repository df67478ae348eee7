"""DRF serializers of bridge resources."""

from __future__ import annotations

from rest_framework import serializers

from ..models import Edge, PluginRegistration


class PluginSerializer(serializers.ModelSerializer):
    class Meta:
        model = PluginRegistration
        fields = ["name", "version", "description", "routes", "ui_schema"]


class EdgeSerializer(serializers.ModelSerializer):
    online = serializers.BooleanField(source="is_online", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    plugins = PluginSerializer(many=True, read_only=True)

    class Meta:
        model = Edge
        fields = [
            "name", "owner", "description", "online", "suspended", "last_seen", "connected_at",
            "disconnected_at", "host", "agent_version", "protocol_version", "plugins", "created_at",
        ]
        read_only_fields = fields
