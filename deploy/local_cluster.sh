#!/usr/bin/env bash
# FER Lab on one machine as N app replicas behind HAProxy with sticky sessions, and K training workers
# on one job queue in Redis (deploy/README.md).
#
#   deploy/local_cluster.sh --replicas N --port P [--workers K] [--address ADDR] [--logs DIR]
#
# Each replica is `streamlit run app.py` on a free port of 127.0.0.1, with FER_LAB_REPLICA=r1..rN;
# all share the model store folder ($FER_LAB_MODELS, else the project's models/), which the workers
# share too, at the same path (uploads wait in its .inbox/, checkpoints in .checkpoints/).
# With K >= 1 (1 unless told) the script first starts Debian's redis-server on a unix socket in the
# log folder (DIR/redis.sock, mode 700, no TCP port; no persistence: --save "" --appendonly no, so
# the queue lasts as long as the script and jobs waiting or running when it stops are lost), waits
# until it answers, and gives every replica FER_LAB_REDIS_URL=unix://DIR/redis.sock: the replicas
# only queue and show jobs, and K workers (`$PYTHON -m fer_core worker --name w1..wK`, each taking
# the train and finetune lanes, one job at a time; $FER_LAB_WORKER_THREADS caps its TensorFlow
# threads) run them. --workers 0 runs no Redis and no worker (FER_LAB_REDIS_URL is unset: jobs run in
# the replica's own process) and is allowed with one replica only: several replicas share one queue
# only through Redis. HAProxy listens on ADDR:P (127.0.0.1 unless told) and keeps each browser session
# on one replica (cookie SERVERID): its WebSocket, uploads and WebRTC signalling; the WebRTC media
# goes straight to that replica's own ICE candidates. The script prints the URL once every replica
# answers and every worker has joined the queue, and stops everything on TERM or Ctrl-C (or when a
# replica, a worker, Redis or HAProxy exits): a busy worker is stopped with its job (RQ's cold shutdown).
# $PYTHON names the Python that runs Streamlit and the workers (python3 unless set).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
START_SECONDS=120
usage="usage: deploy/local_cluster.sh --replicas N --port P [--workers K] [--address ADDR] [--logs DIR]"

die() {
  echo "local_cluster.sh: $*" >&2
  exit 2
}

replicas="" port="" workers="1" address="127.0.0.1" logs=""
while (($#)); do
  case "$1" in
    --replicas | --port | --workers | --address | --logs)
      (($# >= 2)) || die "$1 needs a value ($usage)"
      case "$1" in
        --replicas) replicas="$2" ;;
        --port) port="$2" ;;
        --workers) workers="$2" ;;
        --address) address="$2" ;;
        --logs) logs="$2" ;;
      esac
      shift 2
      ;;
    -h | --help)
      echo "$usage"
      exit 0
      ;;
    *) die "unknown argument '$1' ($usage)" ;;
  esac
done
[[ -n $replicas && -n $port ]] || die "$usage"
[[ $replicas =~ ^[0-9]+$ ]] && ((10#$replicas >= 1 && 10#$replicas <= 32)) ||
  die "--replicas takes a whole number from 1 to 32, not '$replicas'"
[[ $workers =~ ^[0-9]+$ ]] && ((10#$workers <= 32)) ||
  die "--workers takes a whole number from 0 to 32, not '$workers'"
[[ $port =~ ^[0-9]+$ ]] && ((10#$port >= 1 && 10#$port <= 65535)) ||
  die "--port takes a port number from 1 to 65535, not '$port'"
replicas=$((10#$replicas)) workers=$((10#$workers)) port=$((10#$port))
((workers >= 1 || replicas == 1)) ||
  die "--workers 0 (no Redis) takes one replica only: several replicas share one job queue only through Redis; give --workers 1 or more, or --replicas 1"
command -v haproxy >/dev/null || die "haproxy is missing: install it (apt-get install haproxy)"
if ((workers)); then
  command -v redis-server >/dev/null ||
    die "redis-server is missing: install it (apt-get install redis-server), or give --workers 0 with --replicas 1"
fi
"$PYTHON" -c "import streamlit" 2>/dev/null ||
  die "'$PYTHON' cannot import streamlit: install the app (pip install -r requirements.txt) or set PYTHON"
if ((workers)); then
  "$PYTHON" -c "import redis, rq" 2>/dev/null ||
    die "'$PYTHON' cannot import rq and redis, which the workers need: install the app (pip install -r requirements.txt) or set PYTHON"
fi
"$PYTHON" - "$address" "$port" <<'EOF' || exit 2
import socket, sys
address, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        # As HAProxy binds: the connections of a cluster that just stopped (TIME_WAIT) do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
except OSError as error:
    sys.exit(f"local_cluster.sh: cannot listen on {address}:{port} ({error.strerror or error}): "
             "another program uses that port, or the address is not this machine's; choose another with --port")
EOF
if [[ -z $logs ]]; then
  logs="$(mktemp -d -t fer-lab-cluster.XXXXXX)"
fi
mkdir -p "$logs" || die "cannot make the log folder $logs"
logs="$(cd "$logs" && pwd)"  # absolute: the workers and Redis's URL name files in it
redis_socket="$logs/redis.sock" redis_url=""
if ((workers)); then
  # A unix socket's path holds 107 bytes at most.
  ((${#redis_socket} <= 107)) ||
    die "the log folder's path is too long for Redis's unix socket $redis_socket (107 characters at most): choose a shorter --logs"
  redis_url="unix://$redis_socket"
fi

# Free ports for the replicas, each asked of the system on 127.0.0.1.
mapfile -t ports < <("$PYTHON" - "$replicas" <<'EOF'
import socket, sys
sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(int(sys.argv[1]))]
print("\n".join(str(sock.getsockname()[1]) for sock in sockets))
EOF
)

pids=()  # every process started, in the order started
names=()
replica_pids=()
worker_pids=()
redis_pid=""

wait_for_exit() {  # up to $1 quarter-seconds until none of the processes $2... runs
  local tries="$1" pid alive
  shift
  for _ in $(seq 1 "$tries"); do
    alive=0
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || return 0
    sleep 0.25
  done
}

stop_all() {
  trap - TERM INT EXIT
  local others=() pid
  for pid in "${pids[@]}"; do
    [[ $pid == "$redis_pid" ]] || others+=("$pid")
  done
  for pid in "${others[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  if ((${#worker_pids[@]})); then
    # A worker's first TERM waits for its running job to end (RQ's warm shutdown); a second one, a
    # second later (RQ ignores one sooner), kills the job's work horse and stops (cold shutdown).
    wait_for_exit 6 "${worker_pids[@]}"
    for pid in "${worker_pids[@]}"; do
      kill -TERM "$pid" 2>/dev/null || true
    done
  fi
  wait_for_exit 40 "${others[@]}"  # up to 10 s for a clean stop, then no more waiting
  for pid in "${worker_pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      pkill -KILL -P "$pid" 2>/dev/null || true  # its work horse, which RQ puts in a process group of its own
    fi
  done
  for pid in "${others[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n $redis_pid ]]; then  # Redis last: the workers tell it they stop
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait_for_exit 20 "$redis_pid"
    kill -KILL "$redis_pid" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
}
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 130' INT
trap stop_all EXIT

healthy() {  # whether $1 answers 200
  "$PYTHON" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)" \
    "$1" 2>/dev/null
}

deadline=$((SECONDS + START_SECONDS))
started_or_die() {  # $1: a pid, $2: its name, $3: its log: fail when it has exited or the time is up
  if ! kill -0 "$1" 2>/dev/null; then
    echo "local_cluster.sh: $2 exited while starting; the end of $3:" >&2
    tail -n 20 "$3" >&2
    exit 1
  fi
  ((SECONDS < deadline)) || {
    echo "local_cluster.sh: $2 did not start in $START_SECONDS s; see $3" >&2
    exit 1
  }
}

if ((workers)); then
  rm -f "$redis_socket"
  redis-server --port 0 --unixsocket "$redis_socket" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$logs" --daemonize no --logfile "" >"$logs/redis.log" 2>&1 &
  redis_pid="$!"
  pids+=("$redis_pid")
  names+=("redis")
  until "$PYTHON" -c "import sys, redis; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()" \
    "$redis_url" 2>/dev/null; do
    started_or_die "$redis_pid" "Redis" "$logs/redis.log"
    sleep 0.25
  done
fi

if ((workers)); then
  replica_env=(FER_LAB_REDIS_URL="$redis_url")
else
  replica_env=(-u FER_LAB_REDIS_URL)
fi
servers=""
for i in $(seq 1 "$replicas"); do
  name="r$i" replica_port="${ports[i - 1]}"
  (cd "$ROOT" && exec env "${replica_env[@]}" FER_LAB_REPLICA="$name" "$PYTHON" -m streamlit run app.py \
    --server.headless true --server.port "$replica_port" --server.address 127.0.0.1 \
    --browser.gatherUsageStats false --server.fileWatcherType none) >"$logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
  replica_pids+=("$!")
  servers+="    server $name 127.0.0.1:$replica_port check inter 2s cookie $name"$'\n'
done
for i in $(seq 1 "$workers"); do
  name="w$i"
  (cd "$ROOT" && exec env FER_LAB_REDIS_URL="$redis_url" "$PYTHON" -m fer_core worker --name "$name") \
    >"$logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
  worker_pids+=("$!")
done

for i in $(seq 1 "$replicas"); do
  until healthy "http://127.0.0.1:${ports[i - 1]}/_stcore/health"; do
    started_or_die "${replica_pids[i - 1]}" "replica r$i" "$logs/r$i.log"
    sleep 0.5
  done
done
# A worker has joined the queue once RQ lists it.
for i in $(seq 1 "$workers"); do
  until "$PYTHON" -c "import sys, redis, rq
connection = redis.Redis.from_url(sys.argv[1], socket_timeout=2)
sys.exit(sys.argv[2] not in {worker.name for worker in rq.Worker.all(connection=connection)})" \
    "$redis_url" "w$i" 2>/dev/null; do
    started_or_die "${worker_pids[i - 1]}" "worker w$i" "$logs/w$i.log"
    sleep 0.5
  done
done

cat >"$logs/haproxy.cfg" <<EOF
# Made by deploy/local_cluster.sh; deploy/haproxy.cfg is the production one.
global
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 1m
    timeout server 1m
    # A session's WebSocket (/_stcore/stream) stays open as long as its browser tab.
    timeout tunnel 8h
    timeout client-fin 10s

frontend fer_lab
    bind $address:$port
    default_backend replicas

backend replicas
    # A new session goes to the replica with the fewest connections (each session holds a WebSocket);
    # the cookie keeps it there.
    balance leastconn
    cookie SERVERID insert indirect nocache httponly
    option httpchk GET /_stcore/health
$servers
EOF
haproxy -c -q -f "$logs/haproxy.cfg" || die "HAProxy refused $logs/haproxy.cfg"
haproxy -db -f "$logs/haproxy.cfg" >"$logs/haproxy.log" 2>&1 &
pids+=("$!")
names+=("haproxy")
until healthy "http://$address:$port/_stcore/health"; do
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "local_cluster.sh: HAProxy exited while starting:" >&2
    tail -n 20 "$logs/haproxy.log" >&2
    exit 1
  fi
  ((SECONDS < deadline)) || die "HAProxy did not answer on $address:$port in $START_SECONDS s; see $logs/haproxy.log"
  sleep 0.25
done

host="$address"
[[ $host == 0.0.0.0 ]] && host="localhost"
if ((workers)); then
  queue="$workers worker(s) on Redis"
else
  queue="jobs run in the replica"
fi
echo "FER Lab: http://$host:$port ($replicas replica(s) behind HAProxy, $queue; Ctrl-C stops them)"
for i in $(seq 1 "$replicas"); do
  echo "  r$i: http://127.0.0.1:${ports[i - 1]} (log: $logs/r$i.log)"
done
for i in $(seq 1 "$workers"); do
  echo "  w$i: worker of the train and finetune lanes (log: $logs/w$i.log)"
done
if ((workers)); then
  echo "  Redis: $redis_url (log: $logs/redis.log)"
fi
echo "  HAProxy log and configuration: $logs"

# Run until a signal, or until one of them exits.
set +e
wait -n "${pids[@]}"
status=$?
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[i]}" 2>/dev/null; then
    echo "local_cluster.sh: ${names[i]} exited (status $status); stopping the others. Logs: $logs" >&2
    break
  fi
done
exit 1
