#!/usr/bin/env bash
# Installs the Debian packages the bundled models are trained on and builds the training and
# held-out sets from them, with a manifest (file, package, origin, group, split, size, sha256).
#
#   scripts/training_data.sh [OUT]        # default data/training (1.2 GB; not in git)
#
# Packages and licences (each allows training on the images and shipping derived weights;
# docs/models.md has the details):
#   plasma-workspace-wallpapers  KDE wallpapers, GPL-2+
#   mate-backgrounds             MATE wallpapers, GPL-2+ / CC-BY-SA-4.0
#   ukui-wallpapers              UKUI wallpapers, CC-BY-SA-3.0
#   ufoai-textures               UFO: Alien Invasion textures, GPL-2+/CC-BY(-SA)-3.0/public domain
#   openarena-081-textures       OpenArena textures, GPL-2+
#   nexuiz-textures              Nexuiz textures, GPL-2+
# Tests and `make demo` never need any of this.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/training}
PY=${PY:-.venv/bin/python}
PACKAGES="plasma-workspace-wallpapers mate-backgrounds ukui-wallpapers ufoai-textures
  openarena-081-textures nexuiz-textures"

missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi
"$PY" scripts/training_data.py "$OUT"
echo "versions:" && dpkg-query -W $PACKAGES
