"""Building the machine backends from the settings, as Django builds its storages: a dotted path
(CLOUDCTL_MACHINE_BACKEND for new instances; each instance keeps the one it was made on) and the options
`backend_config` gives it. The backends themselves (`backends/`) read no settings and import no Django.
"""

import functools
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .backends import BackendError, MachineBackend
from .leases import MachineLeaseLedger


def _local_options() -> dict:
    return {"instances_dir": settings.LOCAL_INSTANCES_DIR, "python": settings.LOCAL_INSTANCE_PYTHON,
            "health_timeout": settings.INSTANCE_HEALTH_TIMEOUT}


def _fly_options() -> dict:
    return {"api_url": settings.FLY_API_URL, "api_token": settings.FLY_API_TOKEN, "org": settings.FLY_ORG,
            "app_prefix": settings.FLY_APP_PREFIX, "teams_domain": settings.TEAMS_DOMAIN,
            "volume_size_gb": settings.FLY_VOLUME_SIZE_GB, "start_timeout": settings.FLY_START_TIMEOUT,
            "visibility_grace": settings.FLY_VISIBILITY_GRACE, "lease_ttl": settings.FLY_LEASE_TTL,
            "health_timeout": settings.FLY_HEALTH_TIMEOUT, "ledger": MachineLeaseLedger()}


def _container_options() -> dict:
    return {"podman": settings.CONTAINER_PODMAN, "containers_conf": settings.CONTAINER_CONTAINERS_CONF,
            "image_repository": settings.CONTAINER_IMAGE_REPOSITORY, "memory": settings.CONTAINER_MEMORY,
            "cpus": settings.CONTAINER_CPUS, "pids_limit": settings.CONTAINER_PIDS_LIMIT,
            "user": settings.CONTAINER_USER, "name_prefix": settings.CONTAINER_NAME_PREFIX,
            "state_dir": settings.STATE_DIR / "containers", "health_timeout": settings.INSTANCE_HEALTH_TIMEOUT}


# The options of the backends cloudctl ships, read from the settings (CLOUDCTL_LOCAL_*, CLOUDCTL_FLY_*,
# CLOUDCTL_CONTAINER_*) each time one is built; any other backend (a test's) is built without options.
OPTIONS = {
    "instances.backends.local.LocalBackend": _local_options,
    "instances.backends.fly.FlyBackend": _fly_options,
    "instances.backends.container.ContainerBackend": _container_options,
}


def backend_config(path: str) -> dict:
    """`{"BACKEND": path, "OPTIONS": {...}}`, as Django's STORAGES describes a storage."""
    return {"BACKEND": path, "OPTIONS": OPTIONS.get(path, dict)()}


def build_backend(path: str, **extra) -> MachineBackend:
    """A new backend of `path` with its options (and `extra` ones, e.g. `spec_for`)."""
    config = backend_config(path)
    return import_string(config["BACKEND"])(**config["OPTIONS"], **extra)


@functools.cache
def get_backend(path: str | None = None) -> MachineBackend:
    return build_backend(path or settings.MACHINE_BACKEND)


@receiver(setting_changed)
def _rebuild_backends(*, setting: str, **kwargs) -> None:
    """A test that changes a setting gets backends built with it, as Django resets its storages."""
    if setting == "MACHINE_BACKEND" or setting.startswith(("FLY_", "LOCAL_INSTANCE", "CONTAINER_")) or setting in (
            "INSTANCE_HEALTH_TIMEOUT", "TEAMS_DOMAIN"):
        get_backend.cache_clear()


def observe_by_backend(instances: Iterable, *, read: str = "observe_many") -> Iterator[tuple[list, dict | BackendError]]:
    """The instances grouped by the backend they run on, each group with one bulk read of their real states by
    team id (`observe_many`, or `inspect_many` for reconcile's fuller look), or the BackendError that read
    raised: what an unreadable backend means is the caller's to say."""
    instances = list(instances)
    for path in {instance.backend for instance in instances}:
        group = [instance for instance in instances if instance.backend == path]
        try:
            observed = getattr(get_backend(path), read)(group)
        except BackendError as error:
            observed = error
        yield group, observed
