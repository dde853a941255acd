#!/usr/bin/env bash
# Asks the registries whether what scripts/cluster.sh relies on is still served.
#
#   scripts/probe-job-servers.sh [--resolve]
#
# What the local Flink and Spark clusters are assembled from, at the versions pinned in
# scripts/cluster/pom.xml: Beam's unshaded runner modules (beam-runners-flink-1.19,
# beam-runners-spark-3) and beam-runners-java-job-service from Maven, and pyspark from PyPI.
# Also asks for Beam's shaded job-server jars at the runner version (not relied on; served
# elsewhere, absent from the Maven Central these machines reach when this was written).
# One line per coordinate: "served" or "NOT served". With --resolve, also resolves each
# engine's whole classpath as `cluster.sh ENGINE install` does (into a scratch Maven
# repository, so nothing cached answers for the registry).
# Exit status 0 when everything relied on is served.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/cluster/pom.xml"
pinned() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$POM"; }
RUNNERS="$(pinned beam.runners.version)" JOB_SERVICE="$(pinned beam.job-service.version)"
PYSPARK="$(pinned pyspark.version)"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

served() {  # group:artifact:version -> 0 if Maven fetches it (no dependencies, no cache)
    mvn -q -B dependency:get -Dartifact="$1" -Dtransitive=false \
        -Dmaven.repo.local="$SCRATCH/m2" > "$SCRATCH/log" 2>&1
}

missing=0
report() {  # relied_on(yes|no) label status
    printf '%-84s %s\n' "$2" "$([[ $3 == 0 ]] && echo served || echo 'NOT served')"
    if [[ $1 == yes && $3 != 0 ]]; then missing=1; fi
}

for coord in "org.apache.beam:beam-runners-flink-1.19:$RUNNERS" \
        "org.apache.beam:beam-runners-spark-3:$RUNNERS" \
        "org.apache.beam:beam-runners-java-job-service:$JOB_SERVICE"; do
    rc=0; served "$coord" || rc=$?
    report yes "$coord (relied on)" "$rc"
done
for coord in "org.apache.beam:beam-runners-flink-1.19-job-server:$RUNNERS" \
        "org.apache.beam:beam-runners-spark-3-job-server:$RUNNERS"; do
    rc=0; served "$coord" || rc=$?
    report no "$coord (shaded; not relied on)" "$rc"
done
rc=0
python3 -m pip index versions pyspark 2>/dev/null | grep -qE "Available versions:.* $PYSPARK(,|$)" \
    || rc=$?
report yes "pypi: pyspark==$PYSPARK (relied on)" "$rc"

if [[ "${1:-}" == --resolve ]]; then
    for engine in flink spark; do
        rc=0
        mvn -q -B -f "$POM" -P "$engine" dependency:copy-dependencies \
            -DoutputDirectory="$SCRATCH/$engine" -Dmaven.repo.local="$SCRATCH/m2" \
            > "$SCRATCH/$engine.log" 2>&1 || rc=$?
        report yes "$engine job server classpath ($(ls "$SCRATCH/$engine" 2>/dev/null | wc -l) jars)" "$rc"
    done
fi
exit "$missing"
