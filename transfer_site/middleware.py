from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from transfer_site.logging import request_id_var, user_id_var


class RequestLogContextMiddleware:
    """Clears the log context at the start of every HTTP request.

    Views set the request id and user id once they know them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_token = request_id_var.set(None)
        user_token = user_id_var.set(None)
        try:
            return self.get_response(request)
        finally:
            request_id_var.reset(request_token)
            user_id_var.reset(user_token)
