"""Database sessions whose table never holds a usable session key (SESSION_ENGINE = "cloudctl.sessions").

Django's database backend stores the cookie's value as the row's primary key, so a copy of the database (a
backup, a replica, a leaked dump) is a set of live staff sessions. This backend stores the SHA-256 digest of
the key instead and hashes the cookie's value before every lookup, save and delete: the cookie still finds its
row, a row no longer gives the cookie. The sessions stay server-side, so deleting a row (logout) revokes it.

A plain digest is enough: keys are 32 random characters (165 bits), nothing to brute-force, and an unkeyed
digest keeps sessions alive across SECRET_KEY rotations. The digest is cut to the 40 characters of Django's
`session_key` column (160 bits), so the table and its migrations stay Django's own.
"""

import hashlib

from django.contrib.sessions.backends import db
from django.utils import timezone

STORED_KEY_LENGTH = 40


def stored_key(session_key: str) -> str:
    """What the session table holds for the cookie value `session_key`."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:STORED_KEY_LENGTH]


class SessionStore(db.SessionStore):
    # Every method of Django's db.SessionStore that puts a session key into a query, sync and async alike;
    # clear_expired filters on the expiry date only.

    def _get_session_from_db(self):
        try:
            return self.model.objects.get(session_key=stored_key(self.session_key), expire_date__gt=timezone.now())
        except self.model.DoesNotExist:
            self._session_key = None

    async def _aget_session_from_db(self):
        try:
            return await self.model.objects.aget(session_key=stored_key(self.session_key),
                                                 expire_date__gt=timezone.now())
        except self.model.DoesNotExist:
            self._session_key = None

    def exists(self, session_key):
        return self.model.objects.filter(session_key=stored_key(session_key)).exists()

    async def aexists(self, session_key):
        return await self.model.objects.filter(session_key=stored_key(session_key)).aexists()

    def create_model_instance(self, data):
        return self.model(session_key=stored_key(self._get_or_create_session_key()),
                          session_data=self.encode(data), expire_date=self.get_expiry_date())

    async def acreate_model_instance(self, data):
        return self.model(session_key=stored_key(await self._aget_or_create_session_key()),
                          session_data=self.encode(data), expire_date=await self.aget_expiry_date())

    def delete(self, session_key=None):
        session_key = session_key or self.session_key
        if session_key is not None:
            self.model.objects.filter(session_key=stored_key(session_key)).delete()

    async def adelete(self, session_key=None):
        session_key = session_key or self.session_key
        if session_key is not None:
            await self.model.objects.filter(session_key=stored_key(session_key)).adelete()
