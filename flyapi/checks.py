"""Client-side checks of what the OpenAPI document does not mark required (reference section 17): each raises
ValueError before anything is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Memory per CPU each CPU kind allows, in MB (DOCS machines/guides-examples/machine-sizing).
MEMORY_PER_CPU_MB = {"shared": (256, 2048), "performance": (2048, 8192)}


def check_guest(guest: Mapping[str, Any], where: str) -> None:
    memory = guest.get("memory_mb")
    if memory is not None and not (is_int(memory) and memory > 0 and memory % 256 == 0):
        raise ValueError(f"{where}.memory_mb must be a positive multiple of 256, got {memory!r}")
    kind, cpus = guest.get("cpu_kind", "shared"), guest.get("cpus", 1)
    if memory is not None and kind in MEMORY_PER_CPU_MB and is_int(cpus):
        low, high = MEMORY_PER_CPU_MB[kind]
        if not low * cpus <= memory <= high * cpus:
            raise ValueError(f"{where}.memory_mb: {cpus} {kind} CPUs take {low * cpus} to {high * cpus} MB, "
                             f"got {memory}")


def check_machine_config(config: Mapping[str, Any]) -> None:
    if not isinstance(config, Mapping) or not isinstance(config.get("image"), str) or not config["image"]:
        raise ValueError("config.image is required")
    check_guest(config.get("guest") or {}, "config.guest")
    if len(config.get("mounts") or []) > 1:
        raise ValueError("config.mounts: a Machine mounts at most one volume")
    for index, file in enumerate(config.get("files") or []):
        if not any(file.get(source) for source in ("raw_value", "secret_name", "image_config")):
            raise ValueError(f"config.files[{index}] needs raw_value, secret_name or image_config")


def check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is required")
