from django.contrib.auth import views as auth_views
from django.urls import path

from . import access_views, notification_views, views

app_name = "portal"

EDGE = "<str:name>"

# Edge pages live under edges/…: a path with three segments or more that is not claimed
# here is the proxy's /{edge}/{plugin}/{route}.
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tokens/", access_views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", access_views.token_revoke, name="token-revoke"),
    path("edges/new/", access_views.edge_add, name="edge-add"),
    path("notifications/", notification_views.notifications, name="notifications"),
    path("notifications/<int:pk>/delete/", notification_views.notification_delete, name="notification-delete"),
    path("notifications/<int:pk>/test/", notification_views.notification_test, name="notification-test"),
    path("notifications/<int:pk>/redeliver/", notification_views.notification_redeliver,
         name="notification-redeliver"),
    path("notifications/unsubscribe/<str:token>/", notification_views.unsubscribe, name="unsubscribe"),
    path(f"edges/{EDGE}/", views.edge_detail, name="edge"),
    path(f"edges/{EDGE}/connect/", access_views.edge_connect, name="edge-connect"),
    path(f"edges/{EDGE}/plugins/psij/jobs/<str:job_id>/", views.psij_job, name="psij-job"),
    path(f"edges/{EDGE}/plugins/<str:plugin>/", views.plugin_page, name="plugin"),
    path(f"edges/{EDGE}/sharing/", access_views.sharing, name="sharing"),
    path(f"edges/{EDGE}/sharing/<int:pk>/remove/", access_views.sharing_remove, name="sharing-remove"),
    path(f"edges/{EDGE}/state/", access_views.edge_state, name="edge-state"),
    path(f"edges/{EDGE}/children/", views.child_launch, name="child-launch"),
    path(f"edges/{EDGE}/stop/", views.child_stop, name="child-stop"),
]
