# Sourced by the test and CI scripts: make sure the local PostgreSQL and
# Redis are up (starting them with this machine's commands when they are
# not), and fail loudly when they cannot be reached.

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  echo "PostgreSQL is down; starting it" >&2
  if [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && return 0
    sleep 0.5
  done
  echo "error: PostgreSQL is not reachable on 127.0.0.1:5432" >&2
  return 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  echo "Redis is down; starting it" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 40); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  echo "error: Redis is not reachable on 127.0.0.1:6379" >&2
  return 1
}

ensure_mosquitto() {
  if (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then return 0; fi
  echo "Mosquitto is down; starting it" >&2
  mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
  for _ in $(seq 1 40); do
    (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && return 0
    sleep 0.25
  done
  echo "error: Mosquitto is not reachable on 127.0.0.1:1883" >&2
  return 1
}
