#!/usr/bin/env bash
# Coverage-guided fuzzing of Uplink's input handling with libFuzzer (swiftc -sanitize=fuzzer,address).
#
#   Fuzz/fuzz.sh [SECONDS] [TARGET...]       TARGET: config, decoder, simulator (default: all three)
#
# Builds the harnesses of Fuzz/Harnesses from the package's own sources, by path, with plain swiftc
# and clang command lines into a separate directory, so the normal `swift build` is never touched
# or slowed. The build is cached (rebuilt when a source changes). Each target then runs for SECONDS
# (default 60) on a corpus that grows across runs, seeded from Configs/, the config test cases,
# Simulators/ and Fuzz/seeds/. A crash, a hang (-timeout=10 s per input) or a memory blow-up
# (-rss_limit_mb) fails the run and leaves the input in $OUT/artifacts/ for replay:
#   $OUT/fuzz-TARGET ARTIFACT
# Environment: UPLINK_FUZZ_BUILD (build and corpus directory, default ${TMPDIR:-/tmp}/uplink-fuzz),
# UPLINK_FUZZ_JOBS (parallel workers per target, default 1).
# Needs the Yams checkout of the main package: `swift build` (or `swift package resolve`) first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config decoder simulator)
OUT=${UPLINK_FUZZ_BUILD:-${TMPDIR:-/tmp}/uplink-fuzz}
JOBS=${UPLINK_FUZZ_JOBS:-1}
export PATH="/opt/swift/usr/bin:$PATH"
YAMS="$ROOT/.build/checkouts/Yams/Sources"
if [ ! -d "$YAMS/Yams" ]; then
    for candidate in "$ROOT"/.build*/checkouts/Yams/Sources; do
        if [ -d "$candidate/Yams" ]; then YAMS=$candidate; break; fi
    done
fi
[ -d "$YAMS/Yams" ] || { echo "fuzz.sh: no Yams checkout under .build/checkouts; run 'swift package resolve' first" >&2; exit 2; }
mkdir -p "$OUT/obj" "$OUT/artifacts"
# One run at a time per build directory (several test runs may share it).
exec 9>"$OUT/.lock"
flock 9

SWIFT_SOURCES=("$ROOT"/Sources/UplinkCore/*.swift "$ROOT"/Sources/UplinkConfig/*.swift "$ROOT"/Sources/Simulator/*.swift
               "$ROOT"/Fuzz/Harnesses/*.swift "$YAMS"/Yams/*.swift "$YAMS"/CYaml/src/*.c "$ROOT/Fuzz/fuzz.sh")
STAMP=$(cat "${SWIFT_SOURCES[@]}" | sha256sum | cut -c1-16)
SAN=(-sanitize=fuzzer,address)
SWIFTFLAGS=(-parse-as-library -gline-tables-only -Onone "${SAN[@]}")

build() {
    local started=$SECONDS
    echo "fuzz.sh: building the harnesses in $OUT (swiftc -sanitize=fuzzer,address)"
    local log="$OUT/build.log"
    : > "$log"
    for c in "$YAMS"/CYaml/src/*.c; do
        clang -c -g -O1 -fsanitize=fuzzer-no-link,address -DYAML_DECLARE_STATIC -I "$YAMS/CYaml/include" "$c" \
            -o "$OUT/obj/cyaml-$(basename "$c" .c).o" >>"$log" 2>&1
    done
    module() {  # NAME SWIFT_VERSION EXTRA... -- SOURCES...
        local name=$1 version=$2; shift 2
        local extra=()
        while [ "$1" != "--" ]; do extra+=("$1"); shift; done
        shift
        swiftc "${SWIFTFLAGS[@]}" -swift-version "$version" -module-name "$name" -emit-module -emit-module-path "$OUT/obj/$name.swiftmodule" \
            -wmo -c -o "$OUT/obj/$name.o" -I "$OUT/obj" -I "$YAMS/CYaml/include" "${extra[@]}" "$@" >>"$log" 2>&1
    }
    module Yams 5 -D SWIFT_PACKAGE -Xcc -DYAML_DECLARE_STATIC -- "$YAMS"/Yams/*.swift
    module UplinkCore 6 -- "$ROOT"/Sources/UplinkCore/*.swift
    module UplinkConfig 6 -- "$ROOT"/Sources/UplinkConfig/*.swift
    module Simulator 6 -enable-testing -- "$ROOT"/Sources/Simulator/*.swift
    local yaml=("$OUT"/obj/cyaml-*.o "$OUT/obj/Yams.o")
    link() {  # TARGET HARNESS OBJECTS...
        local target=$1 harness=$2; shift 2
        swiftc "${SWIFTFLAGS[@]}" -swift-version 6 -I "$OUT/obj" -I "$YAMS/CYaml/include" "$harness" "$@" -o "$OUT/fuzz-$target" >>"$log" 2>&1
    }
    link config "$ROOT/Fuzz/Harnesses/ConfigFuzz.swift" "$OUT/obj/UplinkConfig.o" "$OUT/obj/UplinkCore.o" "${yaml[@]}"
    link decoder "$ROOT/Fuzz/Harnesses/DecoderFuzz.swift" "$OUT/obj/UplinkCore.o"
    link simulator "$ROOT/Fuzz/Harnesses/SimulatorFuzz.swift" "$OUT/obj/Simulator.o" "${yaml[@]}"
    echo "$STAMP" > "$OUT/stamp"
    echo "fuzz.sh: built in $((SECONDS - started)) s"
}

if [ "$(cat "$OUT/stamp" 2>/dev/null)" != "$STAMP" ] || [ ! -x "$OUT/fuzz-config" ] || [ ! -x "$OUT/fuzz-decoder" ] || [ ! -x "$OUT/fuzz-simulator" ]; then
    if ! build; then
        echo "fuzz.sh: the build failed; the last lines of $OUT/build.log:" >&2
        grep -v "Cannot export local symbol" "$OUT/build.log" | tail -30 >&2
        exit 2
    fi
fi

seed() {  # TARGET: fills the corpus directory (kept across runs)
    local target=$1 dir="$OUT/corpus/$1"
    mkdir -p "$dir"
    case $target in
        config)
            cp "$ROOT"/Configs/*.yaml "$dir/" 2>/dev/null || true
            for f in "$ROOT"/Tests/UplinkConfigTests/testcases/*.yaml; do cp "$f" "$dir/case-$(basename "$f")"; done ;;
        decoder)
            printf '\x00\x08\x43\x5c\x77\x7b' > "$dir/float32"
            printf '\x06\x0a\x41\x42\x43\x44\x45\x46\x20\x20\x00\x00\xff\xff' > "$dir/string"
            printf '\x00\x89\x00\x01\x02\x03\x04\x05\x06\x07' > "$dir/int64-cdab" ;;
        simulator)
            cp "$ROOT"/Fuzz/seeds/simulator/* "$dir/"
            for f in "$ROOT"/Simulators/*.yaml; do { printf '\x05'; cat "$f"; } > "$dir/profile-$(basename "$f")"; done ;;
    esac
}

status=0
for target in "${TARGETS[@]}"; do
    case $target in config|decoder|simulator) ;; *) echo "fuzz.sh: unknown target '$target' (config, decoder, simulator)" >&2; exit 64 ;; esac
    seed "$target"
    parallel=()
    [ "$JOBS" -gt 1 ] && parallel=(-jobs="$JOBS" -workers="$JOBS")
    dict=()
    case $target in
        config) dict=(-dict="$ROOT/Fuzz/dictionaries/yaml.dict") ;;
        simulator) cat "$ROOT/Fuzz/dictionaries/yaml.dict" "$ROOT/Fuzz/dictionaries/http.dict" > "$OUT/simulator.dict"; dict=(-dict="$OUT/simulator.dict") ;;
    esac
    log="$OUT/run-$target.log"
    set +e
    # Run in $OUT: with -jobs, libFuzzer writes its fuzz-N.log files to the current directory.
    (cd "$OUT" && ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 "$OUT/fuzz-$target" "${dict[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -detect_leaks=0 -print_final_stats=1 \
        "${parallel[@]}" -artifact_prefix="$OUT/artifacts/$target-" "$OUT/corpus/$target") > "$log" 2>&1
    rc=$?
    set -e
    if [ "$JOBS" -gt 1 ]; then cat "$OUT"/fuzz-*.log >> "$log" 2>/dev/null || true; rm -f "$OUT"/fuzz-*.log; fi
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
    corpus=$(ls "$OUT/corpus/$target" | wc -l)
    if [ $rc -eq 0 ] && ! grep -qE 'ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY: libFuzzer|==ERROR' "$log"; then
        echo "fuzz-$target: no crash, no hang: ${runs:-0} inputs in ${SECONDS_PER_TARGET} s, ${cov:-0} coverage edges, corpus ${corpus} inputs"
    else
        status=1
        artifact=$(grep -Eo "Test unit written to [^ ]+" "$log" | tail -1 | cut -d' ' -f5)
        echo "fuzz-$target: FAILED (exit $rc) after ${runs:-0} inputs; input saved: ${artifact:-none}; log: $log"
        grep -E 'ERROR|Fatal error|SUMMARY|deadly signal|timeout' "$log" | head -5
    fi
done
exit $status
