#!/usr/bin/env bash
# The augmentation ablation (none / feature mode / audio mode) and CR1 vs CR2 of McFee & Bello (2017)
# on the demo, compared with paired tests (docs/compare.md):
#
#   examples/ablation.sh WORKDIR [mirpipe demo options, e.g. --tracks 40 --config my.yaml]
#
#   WORKDIR                   the demo: feature-mode augmentation, CR2 (the configuration's defaults)
#   WORKDIR/experiments/      no-aug (augment.enabled=false) and cr1, on WORKDIR's features
#   WORKDIR-audio             audio-mode augmentation: another store, the same corpus and splits
#
# The variants train and score the chord model only (TASKS=chord, the study's task; TASKS="chord pitch
# instrument" for all three): the other models would be trained again unchanged or, for audio mode,
# compared on the same question. Each step resumes: a rerun does only what is not done.
set -euo pipefail
W=${1:?usage: examples/ablation.sh WORKDIR [mirpipe demo options]}
shift
MIRPIPE=${MIRPIPE:-mirpipe}
PYTHON=${PYTHON:-python}
TASKS=${TASKS:-chord}
ONLY="[$(echo $TASKS | tr ' ' ',')]"

$MIRPIPE demo --workdir "$W" "$@"
$MIRPIPE run --workdir "$W" --experiment no-aug --set augment.enabled=false --set "train.tasks=$ONLY" --set "evaluate.tasks=$ONLY"
$MIRPIPE run --workdir "$W" --experiment cr1 --set train.models.chord.architecture=cr1 --set "train.tasks=$ONLY" --set "evaluate.tasks=$ONLY"

# audio mode stores other entries: a workdir of its own on WORKDIR's corpus, its settings otherwise
$PYTHON - "$W" "$TASKS" <<'PY'
import pathlib, sys, yaml
w, tasks = pathlib.Path(sys.argv[1]), sys.argv[2].split()
cfg = yaml.safe_load((w / "mirpipe.yaml").read_text())["pipeline"]
cfg.pop("synthesize", None)
cfg["ingest"]["corpus"] = str((w / "corpus").resolve())
cfg["augment"]["mode"] = "audio"
cfg["train"]["tasks"] = cfg["evaluate"]["tasks"] = tasks
(w.parent / f"{w.name}-audio.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
PY
$MIRPIPE run --workdir "$W-audio" --config "$W-audio.yaml"

$MIRPIPE compare base no-aug --workdir "$W"
$MIRPIPE compare base cr1 --workdir "$W"
$MIRPIPE compare "$W" "$W-audio" --workdir "$W"
$MIRPIPE report --workdir "$W"
