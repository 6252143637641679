"""The hardened systemd unit and the process it runs."""

import pytest

from appliance_host import DATA_DIR, JOB_NETWORK_UNIT, JOB_USER, LOG_DIR, SERVICE_USER, UNIT

# Capabilities as systemctl names them, and as a /proc status mask (CAP_KILL 5, CAP_SETGID 6, CAP_SETUID 7).
CAPABILITIES = "cap_kill cap_setgid cap_setuid"
CAPABILITY_MASK = (1 << 5) | (1 << 6) | (1 << 7)
POWER_OFF = "org.freedesktop.login1.power-off"


def test_unit_is_active(host):
    assert host.service(UNIT).is_running


def test_unit_is_enabled(host):
    assert host.service(UNIT).is_enabled


def test_job_network_rules_are_loaded(host):
    assert host.service(JOB_NETWORK_UNIT).is_running


def test_job_network_rules_are_loaded_at_boot(host):
    assert host.service(JOB_NETWORK_UNIT).is_enabled


def test_job_network_rules_come_before_the_service(host):
    assert f"{UNIT}.service" in host.check_output(f"systemctl show -p Before --value {JOB_NETWORK_UNIT}").split()


@pytest.mark.parametrize(("name", "value"), [
    ("User", SERVICE_USER),
    ("Group", SERVICE_USER),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("PrivateTmp", "yes"),
    ("ProtectHome", "yes"),
    ("PrivateDevices", "yes"),
    ("ReadWritePaths", f"{DATA_DIR} {LOG_DIR} " + " ".join(f"-{root}/system.slice/{UNIT}.service"
                                                        for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"))),
    ("ReadOnlyPaths", "/sys/fs/cgroup"),
    ("ProtectControlGroups", "no"),
    ("Delegate", "yes"),
    ("KillMode", "control-group"),
    ("AmbientCapabilities", CAPABILITIES),
    ("CapabilityBoundingSet", CAPABILITIES),
    ("Restart", "on-failure"),
    ("EnvironmentFiles", "/etc/server-responder/env (ignore_errors=yes)"),
])
def test_unit_property(host, name, value):
    assert host.check_output(f"systemctl show -p {name} --value {UNIT}") == value


def test_unit_starts_after_cloud_init_wrote_its_files(host):
    assert "cloud-init.service" in host.check_output(f"systemctl show -p After --value {UNIT}").split()


def test_process_runs_as_the_service_user(host, appliance):
    assert host.process.get(pid=appliance.service_pid()).user == SERVICE_USER


@pytest.mark.parametrize("kind", ["CapPrm", "CapEff", "CapBnd", "CapAmb"])
def test_process_holds_only_the_capabilities_to_run_jobs(host, appliance, kind):
    status = host.file(f"/proc/{appliance.service_pid()}/status").content_string
    values = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith("Cap"))
    assert int(values[kind], 16) == CAPABILITY_MASK


def test_app_listens_on_loopback(host):
    assert host.socket("tcp://127.0.0.1:8080").is_listening


def test_app_listens_nowhere_else(host):
    listening = [url for url in host.socket.get_listening_sockets() if url.endswith(":8080")]
    assert listening == ["tcp://127.0.0.1:8080"]


def test_service_user_may_power_the_box_off(host, appliance):
    assert host.run(f"pkcheck --action-id {POWER_OFF} --process {appliance.service_pid()}").rc == 0


def test_job_user_may_not_power_the_box_off(host):
    check = f"exec pkcheck --action-id {POWER_OFF} --process $$"
    assert host.run(f"runuser -u {JOB_USER} -- sh -c '{check}'").rc != 0


def test_log_lines_are_json(host):
    lines = host.check_output(f"tail -n 20 {LOG_DIR}/server-responder.log").splitlines()
    parsed = [line for line in lines if line.startswith("{") and line.endswith("}")]
    assert lines and parsed == lines
