"""The test suite. Importing it fixes the compiled-hot-path mode before anything imports the
proxy: pure Python unless the run asks otherwise (`make test` runs the proxy's tests a second
time with `VOCELIO_COMPILED=require`; see vocelio_proxy/compiled.py). Gateways the tests start
inherit the mode through the environment."""

import os

os.environ.setdefault("VOCELIO_COMPILED", "off")
