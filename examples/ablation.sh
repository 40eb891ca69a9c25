#!/usr/bin/env bash
# The augmentation ablation (none / feature mode / audio mode) and CR1 vs CR2 of McFee & Bello (2017)
# on the demo, compared with paired tests (docs/compare.md):
#
#   examples/ablation.sh WORKDIR [mirpipe demo options, e.g. --tracks 40 --config my.yaml]
#
#   WORKDIR                   the demo: feature-mode augmentation, CR2 (the configuration's defaults)
#   WORKDIR/experiments/      no-aug (augment.enabled=false) and cr1, on WORKDIR's features
#   WORKDIR-audio             audio-mode augmentation: another store, the same corpus and splits
set -euo pipefail
W=${1:?usage: examples/ablation.sh WORKDIR [mirpipe demo options]}
shift
MIRPIPE=${MIRPIPE:-mirpipe}
PYTHON=${PYTHON:-python}

$MIRPIPE demo --workdir "$W" "$@"
$MIRPIPE run --workdir "$W" --experiment no-aug --set augment.enabled=false
$MIRPIPE run --workdir "$W" --experiment cr1 --set train.models.chord.architecture=cr1

# audio mode stores other entries: a workdir of its own on WORKDIR's corpus, its settings otherwise
$PYTHON - "$W" <<'PY'
import pathlib, sys, yaml
w = pathlib.Path(sys.argv[1])
cfg = yaml.safe_load((w / "mirpipe.yaml").read_text())["pipeline"]
cfg.pop("synthesize", None)
cfg["ingest"]["corpus"] = str((w / "corpus").resolve())
cfg["augment"]["mode"] = "audio"
(w.parent / f"{w.name}-audio.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
PY
$MIRPIPE run --workdir "$W-audio" --config "$W-audio.yaml"

$MIRPIPE compare base no-aug --workdir "$W"
$MIRPIPE compare base cr1 --workdir "$W"
$MIRPIPE compare "$W" "$W-audio" --workdir "$W"
$MIRPIPE report --workdir "$W"
