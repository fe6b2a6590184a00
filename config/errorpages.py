"""Error pages: in the portal's look for people, in the API's error envelope under /api/.

The 500 page is rendered without the request (no context processors, no database): whatever
broke the request may be the database itself.
"""

from __future__ import annotations

from django.http import HttpResponseServerError
from django.template import loader
from django.views import defaults
from django.views.decorators.csrf import requires_csrf_token

from core import context
from core.errors import api_error


@requires_csrf_token
def permission_denied(request, exception):
    return (api_error(request, 403, "permission_denied",
                       "You do not have permission to perform this action.")
            or defaults.permission_denied(request, exception, template_name="403.html"))


@requires_csrf_token
def page_not_found(request, exception):
    return (api_error(request, 404, "not_found", "Not found.")
            or defaults.page_not_found(request, exception, template_name="404.html"))


@requires_csrf_token
def server_error(request):
    request_id = context.current().request_id
    api = api_error(request, 500, "server_error", "Something went wrong on our side.",
                     {"request_id": request_id} if request_id else None)
    if api is not None:
        return api
    html = loader.get_template("500.html").render({"request_id": request_id})
    return HttpResponseServerError(html)
