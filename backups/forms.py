"""The forms that name a point of a team's replica, shared by the console and the members' pages: they parse; the
plan (`restore.plan_restore`) checks the point against the replica."""

from django import forms

from .replicas import DATABASE_NAME, DEFAULT_DATABASE
from .window import parse_moment, parse_txid


class RestorePointForm(forms.Form):
    """Which database's window to read, and optionally a point to plan a restore to, by time or by transaction
    (not both)."""

    database = forms.CharField(max_length=204, initial=DEFAULT_DATABASE, required=False)
    timestamp = forms.CharField(required=False, max_length=64, label="Time (ISO 8601 with a zone)",
                                widget=forms.TextInput(attrs={"placeholder": "2026-11-26T17:40:00Z"}))
    txid = forms.CharField(required=False, max_length=18, label="or transaction (hex)")

    def clean_database(self):
        name = self.cleaned_data["database"] or DEFAULT_DATABASE
        if not DATABASE_NAME.fullmatch(name):  # the whole name: a RegexField only searches
            raise forms.ValidationError("A database name: letters, digits, _ . -, ending in .db.")
        return name

    def clean_timestamp(self):
        return self._parsed("timestamp", parse_moment)

    def clean_txid(self):
        return self._parsed("txid", parse_txid)

    def _parsed(self, name, parse):
        text = self.cleaned_data[name]
        try:
            return parse(text) if text else None
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("timestamp") and cleaned.get("txid"):
            raise forms.ValidationError("Name a time or a transaction, not both.")
        return cleaned


class RestoreRequestForm(RestorePointForm):
    """A restore to ask for (POST): a time, a transaction or, ticked, the latest point; exactly one, so an empty
    form never restores the latest point by accident."""

    latest = forms.BooleanField(required=False, label="or the latest point")

    def clean(self):
        cleaned = super().clean()
        named = [name for name in ("timestamp", "txid", "latest") if cleaned.get(name)]
        if not self.errors and len(named) != 1:
            raise forms.ValidationError("Name one point to restore to: a time, a transaction, or the latest.")
        return cleaned
