"""What ends a grant besides its control-plane session expiring or being deleted (checked on every re-validation)."""

from .services import end_sessions, session_reference


def end_instance_sessions_on_sign_out(sender, request, user, **kwargs):
    """Django's `user_logged_out` (allauth's sign-out sends it too): the grants issued from this session end."""
    session = getattr(request, "session", None)
    if session is not None and session.session_key is not None:
        end_sessions(session_reference(session), actor=user.get_username() if user else "anonymous")
