from django import forms
from django.conf import settings

from instances.models import Instance
from teams.models import SLUG_PATTERN, Team
from teams.routing import team_url


class TeamFilterForm(forms.Form):
    """The team list's search and filters (GET); every field optional."""

    BACKUP_CHOICES = [("", "any"), ("stale", "stale"), ("fresh", "fresh"), ("never", "never backed up")]

    q = forms.CharField(required=False, label="Search", max_length=200,
                        widget=forms.TextInput(attrs={"placeholder": "slug or name"}))
    status = forms.ChoiceField(required=False, choices=[("", "any"), *Team.Status.choices])
    state = forms.ChoiceField(required=False, label="Instance", choices=[("", "any"), *Instance.State.choices])
    image = forms.ChoiceField(required=False, choices=[("", "any")])
    backup = forms.ChoiceField(required=False, choices=BACKUP_CHOICES)

    def __init__(self, data, *, images: list[str]):
        super().__init__(data)
        self.fields["image"].choices = [("", "any"), *((image, image) for image in images)]


class TeamCreateForm(forms.Form):
    """Field shapes only: create_team validates the rest (reserved and taken slugs, region)."""

    slug = forms.RegexField(regex=SLUG_PATTERN, max_length=63, label="Slug (subdomain)",
                            help_text=f"Its Datasette is served at {team_url('<slug>')}",
                            error_messages={"invalid": "Use 1-63 lowercase letters, digits and hyphens, starting "
                                                       "and ending with a letter or digit."})
    name = forms.CharField(max_length=200, required=False, help_text="Display name (default: the slug)")
    region = forms.ChoiceField(choices=[])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["region"].choices = [(region, region) for region in settings.REGIONS]


class ConfirmForm(forms.Form):
    """The typed confirmation an action with a `confirm_text` (teams.actions) asks for: the team's slug."""

    confirm = forms.CharField(label="Type the team's slug to confirm", max_length=63)

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team

    def clean_confirm(self):
        if self.cleaned_data["confirm"] != self.team.slug:
            raise forms.ValidationError(f"Type {self.team.slug} to confirm.")
        return self.cleaned_data["confirm"]


class DeploymentForm(forms.Form):
    """What `manage.py deploy` takes, from the deployments page; `start_deployment` validates the rest."""

    image = forms.CharField(max_length=300, help_text="The image (Fly) or instance version (local backend).")
    teams = forms.CharField(required=False, max_length=10_000, label="Teams",
                            help_text="Comma-separated slugs; empty for every active team.")
    canary = forms.IntegerField(min_value=0, initial=1, help_text="Teams updated first, alone.")
    concurrency = forms.IntegerField(min_value=1, max_value=200, initial=10)
    max_failures = forms.IntegerField(
        min_value=0, initial=0, help_text="Failures of the image tolerated before halting (teams unhealthy before "
                                          "their update, or failing on their previous image too, never count).")
    wave_size = forms.IntegerField(min_value=0, initial=0, required=False,
                                   help_text="Teams per wave after the canary; 0 for one wave.")

    def options(self) -> dict:
        data = self.cleaned_data
        slugs = [slug.strip() for slug in data["teams"].split(",") if slug.strip()] or None
        return {"slugs": slugs, "canary": data["canary"], "concurrency": data["concurrency"],
                "max_failures": data["max_failures"], "wave_size": data["wave_size"] or 0}


class RedeployForm(forms.Form):
    image = forms.CharField(max_length=300)
