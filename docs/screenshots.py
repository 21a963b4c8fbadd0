#!/usr/bin/env python
"""Regenerate the README's screenshots (dashboard, admin, a team's Datasette) from a running `make dev`
(Playwright driving Debian's Chromium).

    .venv/bin/python docs/screenshots.py http://127.0.0.1:8000 <admin password> <admin TOTP key> \
        <team Datasette URL> [version]

The TOTP key is the one shown when the admin enrolled (it signs in with a code, as staff must). The version
(default v2) is deployed to the fleet from the dashboard: give one the teams do not run yet.
"""

import base64
import hashlib
import hmac
import struct
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def totp_code(key: str) -> str:
    """The 6-digit code an authenticator app shows now for `key` (RFC 6238: SHA-1, 30-second steps)."""
    step = struct.pack(">Q", int(time.time()) // 30)
    digest = hmac.new(base64.b32decode(key, casefold=True), step, hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def main(base: str, password: str, totp_key: str, team_url: str, version: str = "v2") -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{base}/admin/login/")
        page.fill("#id_login", "admin")
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.fill("#id_code", totp_code(totp_key))
        page.click("#content button[type=submit]")
        # The dashboard: fleet home, team list, a team's page, the create form.
        page.goto(f"{base}/dashboard/")
        page.screenshot(path=HERE / "dashboard-home.png")
        page.goto(f"{base}/dashboard/teams/")
        page.screenshot(path=HERE / "dashboard-teams.png")
        page.click("#team-list tbody a")
        page.wait_for_selector('#instance-state[data-state="running"]')
        page.screenshot(path=HERE / "dashboard-team.png", full_page=True)
        page.goto(f"{base}/dashboard/create/")
        page.screenshot(path=HERE / "dashboard-create.png")
        # A deployment from the dashboard: the new version rolls out on the worker while the page follows it.
        page.goto(f"{base}/dashboard/deployments/")
        page.fill("#id_image", version)
        page.click("#deployment-form button[type=submit]")
        page.wait_for_selector('#deployment-state[data-open="false"]', timeout=120_000)
        page.screenshot(path=HERE / "dashboard-deployment.png", full_page=True)
        page.goto(f"{base}/dashboard/deployments/")
        page.screenshot(path=HERE / "dashboard-deployments.png")
        page.goto(f"{base}/admin/teams/team/")
        page.screenshot(path=HERE / "admin-teams.png")
        page.goto(f"{base}/admin/credentials/credentialevent/")
        page.screenshot(path=HERE / "admin-audit.png")
        page.goto(team_url)
        page.screenshot(path=HERE / "team-datasette.png")
        page.goto(f"{team_url.rstrip('/')}/data")
        page.screenshot(path=HERE / "team-datasette-database.png")
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:6])
