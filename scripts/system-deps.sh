#!/usr/bin/env bash
# System packages mirpipe needs beyond PyPI. Installs them with apt when it can,
# otherwise stops with a message naming the packages.
#   rubberband-cli : the 'rubberband' program behind the rubberband pitch-shift backend
#   sox            : the program behind muda's dynamic range compression (augment.deformations: {kind: drc})
#   libfluidsynth3 : FluidSynth, the demo corpus's sampled renderer (through pyfluidsynth)
#   fluid-soundfont-gm, musescore-general-soundfont-small : GM soundfonts of the demo's train/val tracks
#   timgm6mb-soundfont : the GM soundfont of the demo's test tracks (unseen in training)
#   freepats : GUS patches, a sample library the demo's training solo clips also draw from
# Without FluidSynth or the soundfonts the demo falls back to its numpy timbres (it says so).
set -euo pipefail

missing=()
command -v rubberband >/dev/null 2>&1 || missing+=(rubberband-cli)
command -v sox >/dev/null 2>&1 || missing+=(sox)
if ! ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so\.3'; then missing+=(libfluidsynth3); fi
sf_dirs="/usr/share/sounds/sf2 /usr/share/sounds/sf3 /usr/share/soundfonts"
have_sf() { for d in $sf_dirs; do [ -f "$d/$1" ] && return 0; done; return 1; }
have_sf FluidR3_GM.sf2 || missing+=(fluid-soundfont-gm)
have_sf MuseScore_General_Lite.sf3 || missing+=(musescore-general-soundfont-small)
have_sf TimGM6mb.sf2 || missing+=(timgm6mb-soundfont)
[ -f /usr/share/midi/freepats/Tone_000/040_Violin.pat ] || missing+=(freepats)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "mirpipe: installing system packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    echo "mirpipe: installing system packages with sudo: ${missing[*]}" >&2
    sudo -n apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { sudo -n apt-get update -q >/dev/null && sudo -n apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
else
    echo "mirpipe: missing system package(s): ${missing[*]}" >&2
    echo "mirpipe: install them with your package manager (Debian/Ubuntu: apt-get install ${missing[*]}; conda: conda install -c conda-forge rubberband fluidsynth)" >&2
    echo "mirpipe: (soundfonts elsewhere: set MIRPIPE_SOUNDFONT_PATH; without them the demo uses its numpy timbres)" >&2
    exit 1
fi
