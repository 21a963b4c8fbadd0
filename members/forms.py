"""The members' pages' forms: they parse; the services (members/services.py) check the rules."""

from django import forms

from teams.models import Membership


class TeamForm(forms.Form):
    slug = forms.CharField(max_length=63, help_text="Your team's subdomain: lowercase letters, digits and hyphens.")
    name = forms.CharField(max_length=200, required=False)


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class TransferForm(forms.Form):
    user = forms.IntegerField(min_value=1, max_value=2**63 - 1)
