package service

import (
	"fmt"
	"path"
	"strings"
)

// The renderers below interpolate only paths that validate accepted: a
// character set that needs no quoting in a unit file, an rc.d shell script or
// XML, so no value can break out of its context.

func systemdUnit(p Params) []byte {
	binDir := path.Dir(p.BinaryPath)
	return fmt.Appendf(nil, `# Written by "vigo service install". Changes are lost on reinstall.
[Unit]
Description=Vigo Envoy agent
Documentation=https://github.com/vigo-enroll/vigo
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=%[1]s run --config-dir %[2]s
# Always come back: after a crash, after a self-update exec that failed, after a kill;
# but not after exit code 3: the envoy is revoked and retrying cannot help.
Restart=always
RestartSec=5s
RestartPreventExitStatus=3
# Sandboxing. The agent only needs the network, its configuration folder and
# the folder of its own binary (self-update replaces it and keeps the previous one).
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=%[2]s %[3]s
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077

[Install]
WantedBy=multi-user.target
`, p.BinaryPath, p.ConfigDir, binDir)
}

func launchdPlist(p Params) []byte {
	return fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by "vigo service install". Changes are lost on reinstall. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>%[3]s</string>
	<key>ProgramArguments</key>
	<array>
		<string>%[1]s</string>
		<string>run</string>
		<string>--config-dir</string>
		<string>%[2]s</string>
	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<true/>
	<key>ThrottleInterval</key>
	<integer>5</integer>
	<key>Umask</key>
	<integer>63</integer>
	<key>StandardOutPath</key>
	<string>/var/log/vigo-envoy.log</string>
	<key>StandardErrorPath</key>
	<string>/var/log/vigo-envoy.log</string>
</dict>
</plist>
`, p.BinaryPath, p.ConfigDir, LaunchdLabel)
}

func freebsdRC(p Params) []byte {
	return fmt.Appendf(nil, `#!/bin/sh
#
# Written by "vigo service install". Changes are lost on reinstall.
#
# PROVIDE: %[3]s
# REQUIRE: LOGIN NETWORKING
# KEYWORD: shutdown
#
# Enabled by /etc/rc.conf.d/%[3]s (%[3]s_enable="YES").

. /etc/rc.subr

name="%[3]s"
rcvar="%[3]s_enable"

load_rc_config $name

: "${%[3]s_enable:=NO}"

pidfile="/var/run/${name}.pid"
procname="/usr/sbin/daemon"
command="/usr/sbin/daemon"
# daemon(8) supervises the agent: -r restarts it when it exits (after -R 5
# seconds), -P records the supervisor's pid so "stop" ends both.
command_args="-r -R 5 -P ${pidfile} -o /var/log/vigo-envoy.log %[1]s run --config-dir %[2]s"

run_rc_command "$1"
`, p.BinaryPath, p.ConfigDir, RCName)
}

func netbsdRC(p Params) []byte {
	return fmt.Appendf(nil, `#!/bin/sh
#
# Written by "vigo service install". Changes are lost on reinstall.
#
# PROVIDE: %[3]s
# REQUIRE: DAEMON NETWORKING
# KEYWORD: shutdown
#
# Enabled by /etc/rc.conf.d/%[3]s (%[3]s=YES).

$_rc_subr_loaded . /etc/rc.subr

name="%[3]s"
rcvar=$name
command="%[1]s"
command_args="run --config-dir %[2]s >>/var/log/vigo-envoy.log 2>&1 &"

load_rc_config $name
run_rc_command "$1"
`, p.BinaryPath, p.ConfigDir, RCName)
}

func openbsdRC(p Params) []byte {
	return fmt.Appendf(nil, `#!/bin/ksh
#
# Written by "vigo service install". Changes are lost on reinstall.

daemon="%[1]s"
daemon_flags="run --config-dir %[2]s"
daemon_logger="daemon.info"

. /etc/rc.d/rc.subr

rc_bg=YES
rc_reload=NO

rc_cmd $1
`, p.BinaryPath, p.ConfigDir)
}

func smfManifest(p Params) []byte {
	return fmt.Appendf(nil, `<?xml version="1.0"?>
<!DOCTYPE service_bundle SYSTEM "/usr/share/lib/xml/dtd/service_bundle.dtd.1">
<!-- Written by "vigo service install". Changes are lost on reinstall. -->
<service_bundle type="manifest" name="%[3]s">
	<service name="system/%[3]s" type="service" version="1">
		<create_default_instance enabled="false"/>
		<single_instance/>
		<dependency name="network" grouping="require_all" restart_on="error" type="service">
			<service_fmri value="svc:/milestone/network:default"/>
		</dependency>
		<dependency name="filesystem" grouping="require_all" restart_on="error" type="service">
			<service_fmri value="svc:/system/filesystem/local:default"/>
		</dependency>
		<exec_method type="method" name="start" exec="%[1]s run --config-dir %[2]s" timeout_seconds="60"/>
		<exec_method type="method" name="stop" exec=":kill" timeout_seconds="60"/>
		<!-- The agent stays in the foreground: svc.startd restarts it when it exits. -->
		<property_group name="startd" type="framework">
			<propval name="duration" type="astring" value="child"/>
		</property_group>
		<stability value="Unstable"/>
		<template>
			<common_name>
				<loctext xml:lang="C">Vigo Envoy agent</loctext>
			</common_name>
		</template>
	</service>
</service_bundle>
`, p.BinaryPath, p.ConfigDir, Name)
}

// windowsCommandLine is the service's binPath: both paths are quoted, and
// validate refused quotes and trailing backslashes, so the quoting holds.
func windowsCommandLine(p Params) string {
	return `"` + p.BinaryPath + `" run --config-dir "` + strings.TrimRight(p.ConfigDir, `\`) + `"`
}
