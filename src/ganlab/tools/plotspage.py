"""An offline page for `dvc plots show` / `dvc plots diff`: Vega's scripts inlined, no CDN.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so it is blank offline. At
set-up time (`make setup`) this fetches the versions DVC itself uses from the npm registry with
`npm pack` (npm checks each tarball's integrity), inlines them into an HTML template and points
DVC at it in `.dvc/config.local`. Nothing is fetched when plots are shown.

Run: python -m ganlab.tools.plotspage [--out .dvc/plots/offline.html]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ganlab.core.files import write_bytes

# The versions dvc_render's own page loads (dvc_render.vega.VegaRenderer.SCRIPTS).
PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
    {inlined}
    <style>table {{ border-spacing: 15px; }}</style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def bundle(tarball: bytes, name: str) -> str:
    """The minified browser build inside an npm package tarball."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(f"package/build/{name}.min.js")
        if member is None:
            raise ValueError(f"{name}: no build/{name}.min.js in the package")
        return member.read().decode()


def page(scripts: dict[str, str]) -> str:
    """The HTML template DVC fills: every script inline, and DVC's `{plot_divs}` placeholder."""
    # A literal "</script" inside a script would end the element early.
    safe = {name: code.replace("</script", "<\\/script") for name, code in scripts.items()}
    inlined = "\n".join(f"<script>/* {name} */\n{code}\n</script>" for name, code in safe.items())
    return PAGE.format(refresh_tag="{refresh_tag}", inlined=inlined)


def fetch(cache: Path) -> dict[str, str]:
    """npm-pack each pinned package into `cache` (once) and return {name: minified script}."""
    cache.mkdir(parents=True, exist_ok=True)
    scripts = {}
    for name, version in PACKAGES.items():
        tgz = cache / f"{name}-{version}.tgz"
        if not tgz.exists():
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=tmp, check=True,
                               capture_output=True, timeout=300)
                shutil.move(Path(tmp) / tgz.name, tgz)
        scripts[name] = bundle(tgz.read_bytes(), name)
    return scripts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".dvc/plots/offline.html"))
    ap.add_argument("--cache", type=Path, default=Path(".venv/vega"))
    args = ap.parse_args()
    if shutil.which("npm") is None:
        print("plotspage: npm not found; `dvc plots show` keeps DVC's page, which needs the network", file=sys.stderr)
        return 0
    try:
        scripts = fetch(args.cache)
    except (subprocess.SubprocessError, OSError, ValueError, tarfile.TarError) as exc:
        print(f"plotspage: could not fetch Vega ({type(exc).__name__}); `dvc plots show` keeps DVC's page, "
              "which needs the network; re-run `make setup` to try again", file=sys.stderr)
        return 0
    write_bytes(args.out, page(scripts).encode())
    # config.local is git-ignored: the page is made on each machine, never committed.
    subprocess.run(["dvc", "config", "--local", "plots.html_template", str(args.out.relative_to(".dvc"))],
                   check=True)
    print(f"plotspage: {args.out} ({args.out.stat().st_size // 1024} KiB, no external scripts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
