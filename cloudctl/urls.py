"""Everything in one process (the embedded run)."""

from cloudctl.errors import handler400, handler403, handler404, handler500  # noqa: F401
from cloudctl import urls_private, urls_public

urlpatterns = urls_public.urlpatterns + urls_private.urlpatterns
