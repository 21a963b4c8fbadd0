"""Sign-in for staff and team members: one login, django-allauth's, with its rate limits and TOTP.

- Members sign themselves up with an email and a password (SIGNUP_MODE "open"), or only through an invitation
  link ("invitation": `members.links`), and prove their address by mail before their first sign-in. Accounts
  made by operators (createsuperuser, the admin) have no address to prove (`EmailVerificationStage`).

- The admin's login URL, where the dashboard sends everyone, serves allauth's login view (`admin_login`), so
  there is no second form that checks passwords outside the rate limits and the TOTP step.
- Staff must have passed TOTP in their session before any page but those that sign in, enroll and sign out
  (`StaffTwoFactorMiddleware`, CLOUDCTL_STAFF_REQUIRE_2FA): staff without TOTP are sent to enroll, staff
  with TOTP whose session somehow lacks it are asked for a code.
"""

import base64

from allauth.account import stages
from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.authentication import get_authentication_records
from allauth.account.forms import SignupForm as AllauthSignupForm
from allauth.account.models import EmailAddress
from allauth.account.utils import get_next_redirect_url
from allauth.account.views import login as allauth_login
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.core import context
from allauth.mfa.models import Authenticator
from cryptography.fernet import Fernet, MultiFernet
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.crypto import salted_hmac

from credentials.audit import client_address
from members.links import remembered_invitation

# allauth's limits are keyed by address: requests whose address cannot be told share this one.
UNKNOWN_ADDRESS = "unknown"

ALLAUTH_EMAIL_VERIFICATION_STAGE = "allauth.account.stages.EmailVerificationStage"
EMAIL_VERIFICATION_STAGE = "cloudctl.accounts.EmailVerificationStage"

# The views a staff member who has not passed TOTP in this session may still reach.
SECOND_FACTOR_VIEWS = frozenset({
    "account_login", "account_logout", "account_reauthenticate",
    "mfa_authenticate", "mfa_reauthenticate", "mfa_index", "mfa_activate_totp",
    "mfa_view_recovery_codes", "mfa_download_recovery_codes", "mfa_generate_recovery_codes",
})


def must_pass_second_factor(user) -> bool:
    return settings.STAFF_REQUIRE_2FA and user.is_authenticated and user.is_staff


def passed_second_factor(request) -> bool:
    """Whether this session's sign-in included a second factor (allauth records each step in the session)."""
    return any(record.get("method") == "mfa" for record in get_authentication_records(request, request.user))


def signup_by_invitation_only() -> bool:
    return settings.SIGNUP_MODE != "open"


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request):
        return not signup_by_invitation_only() or remembered_invitation(request) is not None

    def get_login_redirect_url(self, request):
        """Without a `next`: staff to the dashboard (LOGIN_REDIRECT_URL), members to their teams."""
        if request.user.is_staff:
            return super().get_login_redirect_url(request)
        return reverse("members:teams")

    def get_signup_redirect_url(self, request):
        # allauth's default is LOGIN_REDIRECT_URL, the dashboard, which a new member may not see.
        return self.get_login_redirect_url(request)

    def get_login_stages(self):
        return [EMAIL_VERIFICATION_STAGE if path == ALLAUTH_EMAIL_VERIFICATION_STAGE else path
                for path in super().get_login_stages()]

    def get_client_ip(self, request) -> str:
        """The address the sign-in limits count against: the proxy header only from a trusted proxy, as on the
        private API (allauth's own setting would believe the header from anyone, who could then pick a fresh
        address for every guess). An address that cannot be told shares one bucket rather than escaping."""
        forwarded = request.headers.get(settings.CLIENT_IP_HEADER) if settings.CLIENT_IP_HEADER else None
        return client_address(request.META.get("REMOTE_ADDR"), forwarded) or UNKNOWN_ADDRESS


class EmailVerificationStage(stages.EmailVerificationStage):
    """allauth's mandatory verification, for accounts that signed themselves up (each has the `EmailAddress` its
    sign-up made). An account made by an operator (createsuperuser, the admin) has none: nobody claimed an
    address to prove, and it signs in as it did before members could sign up."""

    def handle(self):
        if not self.login.signup and not EmailAddress.objects.filter(user_id=self.login.user.pk).exists():
            return None, True
        return super().handle()


class SignupForm(AllauthSignupForm):
    """allauth's sign-up form; by invitation only, the address must be the one the invitation was sent to (or
    one invitation would open an account for any address)."""

    def clean_email(self):
        email = super().clean_email()
        if signup_by_invitation_only():
            invitation = remembered_invitation(context.request)
            if invitation is None or invitation.email.lower() != email.lower():
                raise forms.ValidationError("Sign-up is by invitation only: use the address your invitation was "
                                            "sent to.")
        return email


def mfa_secrets_cipher() -> MultiFernet:
    """Fernet under a key derived from SECRET_KEY (the first encrypts) and each of SECRET_KEY_FALLBACKS, so
    rotating the secret key with the old one as a fallback keeps every enrolled authenticator working."""
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return MultiFernet([
        Fernet(base64.urlsafe_b64encode(salted_hmac("cloudctl.mfa-secrets.v1", "", secret=key,
                                                    algorithm="sha256").digest()))
        for key in keys])


class MFAAdapter(DefaultMFAAdapter):
    # TOTP secrets and recovery-code seeds are stored encrypted: a database copy yields no second factor.
    def encrypt(self, text):
        return mfa_secrets_cipher().encrypt(text.encode()).decode()

    def decrypt(self, encrypted_text):
        return mfa_secrets_cipher().decrypt(encrypted_text.encode()).decode()

    def can_delete_authenticator(self, authenticator):
        # Staff keep their TOTP while it is required, or their next sign-in would skip the second factor.
        required = must_pass_second_factor(authenticator.user) and authenticator.type == Authenticator.Type.TOTP
        return not required and super().can_delete_authenticator(authenticator)


class StaffTwoFactorMiddleware:
    """After AuthenticationMiddleware: staff without TOTP in this session reach only the SECOND_FACTOR_VIEWS."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.resolver_match.view_name in SECOND_FACTOR_VIEWS or not must_pass_second_factor(request.user):
            return None
        if passed_second_factor(request):
            return None
        enrolled = Authenticator.objects.filter(user=request.user, type=Authenticator.Type.TOTP).exists()
        return redirect_to_login(request.get_full_path(),
                                 reverse("mfa_reauthenticate" if enrolled else "mfa_activate_totp"))


def admin_login(request, extra_context=None):
    """Replaces the admin's login view (`admin.site.login`): anonymous visitors get allauth's login (the same
    view as /accounts/login/, its limits and its TOTP step), staff go on to where they were going, and anyone
    else is told this needs a staff account."""
    if not request.user.is_authenticated:
        return allauth_login(request)
    if request.user.is_active and request.user.is_staff:
        return redirect(get_next_redirect_url(request) or reverse("admin:index"))
    return render(request, "cloudctl/not_staff.html", {**admin.site.each_context(request), "title": "Staff only"},
                  status=403)
