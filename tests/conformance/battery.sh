# The conformance battery: observations and escape attempts, run as
# `sh -c` inside a container made from an unchanged `runc spec` bundle.
# Every line is "name: value"; the test runs it under runc, crun and
# cvbench's runtime and requires the same lines.  Values that differ by
# design between runtimes (pids of the host, ids) are not printed.
# Written from the OCI runtime-spec (config.md, config-linux.md,
# runtime.md) and from what runc's and crun's own tests check.
st() { grep "^$1:" /proc/self/status | tr -s ' \t' ' '; }
p() { printf '%s: %s\n' "$1" "$2"; }
p fds "$(ls /proc/self/fd | tr '\n' ' ')"
for f in Uid Gid Groups CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp Seccomp_filters SigBlk SigIgn; do
  p "status.$f" "$(st $f | cut -d: -f2-)"
done
p umask "$(umask)"
p home "$HOME"
p env "$(env | grep -v '^PWD=\|^SHLVL=\|^_=' | sort | tr '\n' ' ')"
p hostname "$(hostname)"
p domainname "$(cat /proc/sys/kernel/domainname)"
p cwd "$(pwd)"
p pid "$$"
p oom_score_adj "$(cat /proc/self/oom_score_adj)"
p nofile "$(ulimit -n)"
for n in cgroup ipc mnt net pid pid_for_children time user uts; do
  p "ns.$n" "$(readlink /proc/self/ns/$n)"
done
# the mount table: point, fstype, per-mount and superblock options, propagation
p mounts "$(awk '{o=""; for (i=7; $i != "-"; i++) { t=$i; sub(/:.*/, "", t); o=o t "," }
  print $5, $(i+1), $6, o, $(i+3)}' /proc/self/mountinfo | sed 's/size=[0-9]*k/size=N/; s/,inode64//' | tr '\n' ';')"
p dev "$(for f in /dev/* /dev/.[a-z]*; do [ -e "$f" -o -L "$f" ] && stat -c '%n %A %u:%g %t:%T' "$f"; [ -L "$f" ] && readlink "$f"; done | tr '\n' ';')"
p cgroupfs "$(ls /sys/fs/cgroup 2>&1 | tr '\n' ' ')"
p cgroup.controllers "$(cut -d: -f2 /proc/self/cgroup | sort | tr '\n' ' ')"
p cgroup.leaf_is_id "$(cut -d: -f3 /proc/self/cgroup | sed 's|.*/||' | sort -u | wc -l)"
for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /sys/firmware /proc/acpi /proc/scsi; do
  p "masked.$f" "$(ls -ld $f 2>&1 | awk '{print $1}') $(head -c 64 $f 2>&1 | wc -c)"
done
for f in /proc/irq /proc/bus /proc/fs /sys/kernel /sys/fs/cgroup/memory /dev/shm /dev/mqueue /tmp /; do
  p "mkdir.$f" "$(mkdir $f/cvb-x 2>&1 | sed 's/.*: //'; rmdir $f/cvb-x 2>/dev/null)"
done
p write.proc_sys "$(cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname 2>&1 | sed 's/.*: //')"
p write.root "$(touch /cvb-x 2>&1 | sed 's/.*: //')"
p write.cgroup "$(mkdir /sys/fs/cgroup/memory/cvb-x 2>&1 | sed 's/.*: //')"
p write.cgroup_top "$(mkdir /sys/fs/cgroup/cvb-top 2>&1 | sed 's/.*: //')"
p write.sysfs "$(echo 1 > /sys/kernel/mm/ksm/run 2>&1 | sed 's/.*: //')"
p escape.mount "$(mount -t tmpfs cvb /tmp 2>&1 | sed 's/.*: //')"
p escape.mknod "$(mknod /dev/shm/cvb-sda b 8 0 2>&1 | sed 's/.*: //')"
p escape.chroot "$(chroot /dev/shm /bin/true 2>&1 | sed 's/.*: //')"
p escape.devmem "$(head -c1 /dev/mem 2>&1 | sed 's/.*: //')"
p escape.kmsg "$(head -c1 /dev/kmsg 2>&1 | sed 's/.*: //')"
p escape.kill1 "$(kill -0 1 2>&1; echo $?)"
p escape.chown "$(chown 1 /dev/shm 2>&1 | sed 's/.*: //')"
p escape.sethostname "$(hostname cvb-x 2>&1 | sed 's/.*: //')"
p escape.nice "$(nice -n -5 true 2>&1 | sed 's/.*: //')"
p escape.fd_parent "$(ls /proc/self/fd/../../1/root/.. 2>&1 | wc -l)"
p devnull "$(echo x > /dev/null && echo ok)"
p devzero "$(head -c 4 /dev/zero | wc -c)"
p devfull "$(echo x 2>&1 > /dev/full | sed 's/.*: //')"
p net "$(cat /proc/net/dev | awk 'NR>2 {print $1}' | tr '\n' ' ')"
p lo "$(cat /sys/class/net/lo/operstate 2>&1)"
p shm "$(echo x > /dev/shm/cvb && cat /dev/shm/cvb)"
p pid1 "$(cat /proc/1/comm)"
p limits "$(grep -E '^Max (open files|processes|core|stack)' /proc/self/limits | tr -s ' ' | tr '\n' ';')"
p ip_forward "$(cat /proc/sys/net/ipv4/ip_forward)"
p personality "$(cat /proc/self/personality)"
p root_propagation "$(awk '$5 == "/" {for (i=7; $i != "-"; i++) {t=$i; sub(/:.*/, "", t); printf "%s ", t}}' /proc/self/mountinfo)"
