#!/usr/bin/env bash
# Asks Maven Central which Beam Spark/Flink job-server jars it serves for a Beam version.
#
#   scripts/probe-job-servers.sh [BEAM_VERSION ...]    # default: the pinned apache-beam
#
# Prints one line per coordinate: the HTTP status of its .pom and .jar (200 = served).
# Exit status 0 if the Spark job server and at least one Flink job server are served for
# some version asked, else 1. MAVEN_REPO overrides https://repo1.maven.org/maven2.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="${MAVEN_REPO:-https://repo1.maven.org/maven2}"
if [[ $# -eq 0 ]]; then
    set -- "$(sed -n 's/^apache-beam==//p' "$ROOT/requirements.lock")"
fi

status() { curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$1" || echo "---"; }

found=1
for version in "$@"; do
    spark=0 flink=0
    for artifact in beam-runners-spark-3-job-server beam-runners-flink-1.19-job-server \
            beam-runners-flink-1.20-job-server beam-runners-flink-2.0-job-server \
            beam-runners-flink-2.1-job-server beam-runners-flink-2.2-job-server; do
        base="$REPO/org/apache/beam/$artifact/$version/$artifact-$version"
        pom="$(status "$base.pom")" jar="$(status "$base.jar")"
        echo "org.apache.beam:$artifact:$version  pom $pom  jar $jar"
        if [[ "$jar" == 200 ]]; then
            case "$artifact" in *spark*) spark=1 ;; *) flink=1 ;; esac
        fi
    done
    if (( spark && flink )); then found=0; fi
done
exit "$found"
