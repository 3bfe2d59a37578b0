"""etc/config.example.json stays true to the code: every key known, every known key shown."""

import json
import os

from actors.config import KNOWN_KEYS, parse_config
from tests.support import REPO

EXAMPLE = os.path.join(REPO, "etc", "config.example.json")


def test_the_example_config_parses_without_warnings():
    warnings = []
    parse_config(open(EXAMPLE, "rb").read(), source=EXAMPLE, warn=warnings.append)
    assert warnings == []


def test_the_example_config_shows_every_known_key():
    assert sorted(json.load(open(EXAMPLE))) == sorted(KNOWN_KEYS)
