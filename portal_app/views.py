"""Server-rendered portal pages."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from bridge_app.selectors import edge_list_for_user


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    edges = edge_list_for_user(user=request.user)
    return render(request, "portal/dashboard.html", {"edges": edges})
