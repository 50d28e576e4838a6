"""The pip requirements of the integrations Home Assistant sets up in `make ha-check`, one per line.

Run with the root's Home Assistant: its always-loaded and default integrations plus the domains given as
arguments, with everything they depend on. After-dependencies count too: Home Assistant imports them (the
analytics integration imports hassio's client library even without a Supervisor).
"""

import json
import pathlib
import sys

import homeassistant.bootstrap as bootstrap
import homeassistant.components as components

root = pathlib.Path(components.__file__).parent
# The sets' names vary between releases; any that a release lacks is simply not there.
SETS = (
    "CORE_INTEGRATIONS",
    "LOGGING_INTEGRATIONS",
    "LOGGING_AND_HTTP_DEPS_INTEGRATIONS",
    "DEFAULT_INTEGRATIONS",
)
todo = [domain for name in SETS for domain in getattr(bootstrap, name, ())] + sys.argv[1:]
seen: set[str] = set()
requirements: set[str] = set()
while todo:
    domain = todo.pop()
    manifest = root / domain / "manifest.json"
    if domain in seen or not manifest.exists():
        continue
    seen.add(domain)
    data = json.loads(manifest.read_text())
    requirements.update(data.get("requirements", []))
    todo.extend(data.get("dependencies", []) + data.get("after_dependencies", []))
print("\n".join(sorted(requirements)))
