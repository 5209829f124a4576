# The warden: kills every cell of a monitor that is gone. Run by /bin/sh as root,
# forked by the monitor (mep.monitor.containment), with the cgroup bases as
# arguments, the v2 base first. Its standard input is a pipe whose only writer
# is the monitor: "stop" means a normal stop (the monitor released its cells);
# end of file means the monitor died, however it died. A shell, not Python: it
# waits for weeks, and a fork of the monitor would keep a private copy of every
# page the monitor writes meanwhile.
trap '' HUP INT QUIT TERM
read -r word || word=
if [ "$word" != stop ]; then
    # The user endpoints got SIGTERM with the monitor: a moment to stop on their own.
    tries=0
    while [ "$tries" -lt 30 ] && grep -qs '^populated 1' "$1/cgroup.events"; do
        sleep 0.1
        tries=$((tries + 1))
    done
fi
for base; do
    [ -d "$base" ] || continue
    if [ -e "$base/cgroup.kill" ]; then
        echo 1 2>/dev/null >"$base/cgroup.kill"
    fi
    tries=0
    while [ -d "$base" ] && [ "$tries" -lt 50 ]; do
        find "$base" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$base" ] && sleep 0.1
        tries=$((tries + 1))
    done
done
