#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, with AddressSanitizer) of the file readers: PyTorch
# checkpoints (.pth: zip and legacy), the unpickler, safetensors, .npy and PNG.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     default: 30 seconds for each of pth pickle safetensors npy png
#
# First every kept regression input (tools/fuzz/regressions/TARGET/) is run once; then each
# target is fuzzed for SECONDS from the seeds (tools/fuzz/seeds/TARGET/, and the reference
# fixtures in $NOISEAR_FIXTURES or ../shared/fixtures) plus the corpus grown by earlier runs on
# this machine (.build/fuzz/corpus/TARGET/). Limits per input: 10 s and 2 GiB. A crash, a
# sanitizer report, a time-out or a limit breach stops the run with a non-zero status and leaves
# the input in tools/fuzz/regressions/TARGET/, to be fixed and committed with the fix.
# Each run's seconds are added to .build/fuzz/seconds-TARGET (the total fuzzed on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pth pickle safetensors npy png)
fixtures=${NOISEAR_FIXTURES:-../shared/fixtures}

out=.build/fuzz
bin=$out/fuzz-readers
mkdir -p "$out"
io=(Sources/NoiseARCore/IO/*.swift)
core=(Sources/NoiseARCore/Core/Errors.swift Sources/NoiseARCore/Core/Shape.swift Sources/NoiseARCore/Core/Text.swift
      Sources/NoiseARCore/Core/ConfigCheck.swift Sources/NoiseARCore/Core/MemoryBudget.swift)
sources=("${io[@]}" "${core[@]}" tools/fuzz/FuzzReaders.swift)
if [ ! -x "$bin" ] || [ -n "$(find "${sources[@]}" tools/fuzz.sh -newer "$bin" 2>/dev/null)" ]; then
    echo "fuzz: building $bin (libFuzzer + AddressSanitizer)"
    swiftc -O -g -sanitize=fuzzer,address -parse-as-library -package-name noisear -module-name NoiseARFuzz \
        -I Sources/CPNG -D NOISEAR_FUZZ "${sources[@]}" -o "$bin" >"$out/build.log" 2>&1 \
        || { grep -v "Cannot export local symbol" "$out/build.log" | tail -40; exit 1; }
fi

seed_fixtures() {  # target -> fixture files used as seeds (those under 64 KiB: small inputs mutate fast)
    case $1 in
        pth|pickle) find "$fixtures/pth" -name '*.pth' -size -64k 2>/dev/null ;;
        safetensors) find "$fixtures/schedulers" "$fixtures/torch_rng" -name '*.safetensors' -size -64k 2>/dev/null ;;
        *) ;;
    esac
}

for t in "${targets[@]}"; do
    case $t in pth|pickle|safetensors|npy|png) ;; *) echo "fuzz: unknown target '$t' (pth pickle safetensors npy png)" >&2; exit 2 ;; esac
    regressions=tools/fuzz/regressions/$t
    corpus=$out/corpus/$t
    mkdir -p "$regressions" "$corpus"
    kept=$(find "$regressions" -type f ! -name README.md | sort)
    if [ -n "$kept" ]; then
        echo "fuzz: $t: $(echo "$kept" | wc -l) regression inputs"
        # shellcheck disable=SC2086
        NOISEAR_FUZZ_TARGET=$t "$bin" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 $kept >"$out/$t-regressions.log" 2>&1 \
            || { tail -40 "$out/$t-regressions.log"; echo "fuzz: $t: a regression input fails again" >&2; exit 1; }
    fi
    seeds=$out/seeds-$t
    rm -rf "$seeds" && mkdir -p "$seeds"
    [ -d tools/fuzz/seeds/$t ] && cp tools/fuzz/seeds/$t/* "$seeds"/ 2>/dev/null || true
    seed_fixtures "$t" | while read -r f; do cp "$f" "$seeds/"; done
    if [ "$t" = pickle ]; then  # the data.pkl records of the zip checkpoints
        cp tools/fuzz/seeds/pth/* "$seeds"/
        for f in "$seeds"/*.pth; do
            python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.endswith("data.pkl"): open(sys.argv[1] + ".pkl", "wb").write(z.read(n))' "$f" 2>/dev/null || true
            rm -f "$f"
        done
    fi
    start=$(date +%s)
    echo "fuzz: $t: $seconds s"
    if ! NOISEAR_FUZZ_TARGET=$t "$bin" "$corpus" "$seeds" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$regressions/" >"$out/$t.log" 2>&1; then
        tail -60 "$out/$t.log"
        echo "fuzz: $t: FINDING, kept in $regressions/ (see $out/$t.log)" >&2
        exit 1
    fi
    ran=$(( $(date +%s) - start ))
    total=$(( $(cat "$out/seconds-$t" 2>/dev/null || echo 0) + ran ))
    echo "$total" >"$out/seconds-$t"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$out/$t.log" | tail -1 || true)
    echo "fuzz: $t: clean, $execs inputs in $ran s ($cov; $total s fuzzed here in all)"
done
