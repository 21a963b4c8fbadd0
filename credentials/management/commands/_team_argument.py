from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from teams.services import get_team


def team_from_slug(slug: str):
    try:
        return get_team(slug)
    except ValidationError as error:
        raise CommandError(error.messages[0]) from None
