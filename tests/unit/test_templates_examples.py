"""Every shipped default and every example site template renders and loads.

The examples are the Polaris config of spec/UEP.md §2, the Polaris workshop
config of seeds/000, and templates in the style admins write (Aurora-like PBS,
Slurm MPI, the official default's shape); providers are built with real Parsl.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from templates.files import DEFAULT_FILES, default_text
from templates.manager_config import manager_config_from_text
from templates.rendering import Rendered, render_user_config
from templates.user_config import load_user_endpoint_config

DATA = Path(__file__).resolve().parent.parent / "data" / "templates"
ALICE = {
    "local": {
        "uname": "alice",
        "uid": 1234,
        "gid": 1234,
        "groups": [1234],
        "gecos": "Alice",
        "shell": "/bin/bash",
        "dir": "/home/alice",
    },
    "globus": {"id": "5fbe3a6d-6c2a-4b0e-8f2e-0e7f2c1c0a11"},
}
RUNTIME = {"globus_compute_sdk_version": "4.19.0", "python": {"version": "3.11.7"}}


def render(template: str, options: dict, schema: dict | None = None):
    parent = manager_config_from_text("", DATA).template_view()
    return render_user_config(
        template, schema, options, user_runtime=RUNTIME, mapped_identity=ALICE, parent_config=parent
    )


def rendered(template: str, options: dict, schema: dict | None = None) -> Rendered:
    outcome = render(template, options, schema)
    assert isinstance(outcome, Rendered), outcome
    return outcome


def test_shipped_files_are_all_present_and_parse():
    assert set(DEFAULT_FILES) == {
        "config.yaml",
        "user_config_template.yaml.j2",
        "user_config_schema.json",
        "user_environment.yaml",
        "example_identity_mapping_config.json",
    }
    schema = json.loads(default_text("user_config_schema.json"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    mapping = json.loads(default_text("example_identity_mapping_config.json"))
    assert mapping[0]["DATA_TYPE"] == "expression_identity_mapping#1.0.0"
    config = manager_config_from_text(default_text("config.yaml"), DATA, "config.yaml")
    assert config.display_name is None and config.min_uid == 1000


def test_default_config_yaml_documents_every_key():
    text = default_text("config.yaml")
    documented = set(re.findall(r"^#\s+([a-z_]+):", text, re.M))
    keys = set(manager_config_from_text("", DATA).template_view()) - {"endpoint_dir", "source"}
    assert keys <= documented, keys - documented


@pytest.mark.parametrize(
    "options",
    [{}, {"worker_init": "module load conda", "endpoint_setup": "mkdir -p ~/x"}],
)
def test_default_template_renders_a_local_provider_engine(options):
    schema = json.loads(default_text("user_config_schema.json"))
    out = rendered(default_text("user_config_template.yaml.j2"), options, schema)
    engine = out.config.engine
    assert engine.type == "GlobusComputeEngine"
    assert engine.provider.type == "LocalProvider"
    assert engine.provider.options.get("worker_init") == options.get("worker_init")
    assert out.config.endpoint_setup == options.get("endpoint_setup")
    assert (out.config.idle_heartbeats_soft, out.config.idle_heartbeats_hard) == (10, 5760)
    provider = engine.provider.build()
    assert type(provider).__name__ == "LocalProvider" and provider.max_blocks == 1


def scheduler_example(scheduler: str) -> tuple[str, dict]:
    return (
        default_text("user_config_template.yaml.j2", scheduler),
        json.loads(default_text("user_config_schema.json", scheduler)),
    )


def test_slurm_example_defaults():
    template, schema = scheduler_example("slurm")
    out = rendered(template, {}, schema)
    engine = out.config.engine
    assert engine.type == "GlobusComputeEngine"
    provider = engine.provider.build()
    assert type(provider).__name__ == "SlurmProvider"
    assert (provider.partition, provider.walltime, provider.exclusive) == (
        "debug",
        "00:30:00",
        False,
    )
    assert type(provider.launcher).__name__ == "SrunLauncher"
    assert provider.account is None and provider.worker_init.strip() == ""


def test_slurm_example_researcher_choices_and_mpi():
    template, schema = scheduler_example("slurm")
    options = {
        "partition": "long",
        "account": "proj-7",
        "walltime": "12:00:00",
        "nodes_per_block": 2,
        "cores_per_node": 8,
        "max_blocks": 3,
        "mpi": True,
        "mpi_launcher": "mpiexec",
        "worker_init": "module load mpich",
    }
    out = rendered(template, options, schema)
    engine = out.config.engine
    assert engine.type == "GlobusMPIEngine"
    assert engine.options["mpi_launcher"] == "mpiexec"
    provider = engine.provider.build()
    assert (provider.partition, provider.account, provider.walltime) == (
        "long",
        "proj-7",
        "12:00:00",
    )
    assert (provider.nodes_per_block, provider.max_blocks, provider.cores_per_node) == (2, 3, 8)
    assert type(provider.launcher).__name__ == "SimpleLauncher"
    assert provider.worker_init.strip() == "module load mpich"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"partition": "gpu"}, "'gpu' is not one of ['debug', 'long']"),
        ({"walltime": "1 day"}, "'1 day' does not match"),
        ({"nodes_per_block": 40}, "40 is greater than the maximum of 4"),
        ({"account": "a; rm -rf ~"}, "does not match"),
        ({"mpi": "yes"}, "'yes' is not of type 'boolean'"),
        ({"qos": "high"}, "Additional properties are not allowed ('qos' was unexpected)"),
    ],
)
def test_slurm_example_schema_refuses(options, message):
    template, schema = scheduler_example("slurm")
    outcome = render(template, options, schema)
    assert outcome.step == "schema" and message in outcome.user_message, outcome


def test_pbspro_example_is_the_polaris_workshop_config():
    template, schema = scheduler_example("pbspro")
    out = rendered(template, {"account": "alcf_training", "walltime": "00:10:00"}, schema)
    engine = out.config.engine
    assert engine.options["available_accelerators"] == 4
    assert engine.options["cpu_affinity"].startswith("list:24-31,56-63:")
    provider = engine.provider.build()
    assert (provider.account, provider.queue, provider.walltime) == (
        "alcf_training",
        "debug",
        "00:10:00",
    )
    assert provider.select_options == "ngpus=4"
    assert provider.scheduler_options == "#PBS -l filesystems=home:eagle:grand"
    assert (provider.launcher.bind_cmd, provider.launcher.overrides) == ("--cpu-bind", "--ppn 1")
    assert render(template, {}, schema).user_message == (
        "user_endpoint_config: 'account' is a required property"
    )


def test_polaris_example_from_the_spec():
    template = (DATA / "polaris_spec.yaml.j2").read_text()
    schema = json.loads((DATA / "hpc_schema.json").read_text())
    options = {"account": "unused", "POLARIS_ACCOUNT": "myproj", "COMMAND": "module use /soft"}
    out = rendered(template, options, schema)
    engine = out.config.engine
    assert engine.options == {"max_workers_per_node": 4}
    assert engine.address.type == "address_by_interface"
    assert engine.address.options == {"ifname": "hsn0"}
    provider = engine.provider
    assert provider.options["account"] == "myproj"
    assert provider.options["walltime"] == "01:00:00"
    assert provider.launcher.options == {
        "bind_cmd": "--cpu-bind",
        "overrides": "--depth=64 --ppn 1",
    }
    built = provider.build()
    assert built.launcher.overrides == "--depth=64 --ppn 1"
    assert built.worker_init == "module use /soft"


def test_polaris_workshop_config_from_the_seed_loads_unrendered_and_rendered():
    text = (DATA / "polaris_workshop.yaml").read_text()
    direct = load_user_endpoint_config(text)
    assert direct == rendered(text, {}).config
    engine = direct.engine
    assert engine.options["available_accelerators"] == 4
    assert engine.options["job_status_kwargs"] == {"max_idletime": 300, "strategy_period": 60}
    assert engine.options["strategy"] == "simple"
    assert engine.provider.options["walltime"] == "00:30:00"
    assert engine.provider.build().cpus_per_node == 64


def test_aurora_style_template_with_schema_and_identity():
    template = (DATA / "aurora_style.yaml.j2").read_text()
    schema = json.loads((DATA / "hpc_schema.json").read_text())
    out = rendered(template, {"account": "proj_1", "walltime": "01:00:00", "nodes": 2}, schema)
    engine = out.config.engine
    assert len(engine.options["available_accelerators"]) == 12
    assert engine.provider.options["nodes_per_block"] == 2
    assert engine.provider.options["worker_init"] == "module load frameworks; cd /home/alice"
    assert out.config.display_name == "aurora"
    assert engine.provider.build().select_options == "system=aurora"


def test_aurora_style_template_refuses_a_bad_walltime_with_the_schema_message():
    template = (DATA / "aurora_style.yaml.j2").read_text()
    schema = json.loads((DATA / "hpc_schema.json").read_text())
    outcome = render(template, {"account": "proj_1", "walltime": "99:00:00x"}, schema)
    assert outcome.step == "schema"
    assert outcome.user_message == (
        "user_endpoint_config.walltime: '99:00:00x' does not match '^\\\\d{2}:\\\\d{2}:\\\\d{2}$'"
    )


def test_slurm_mpi_template():
    template = (DATA / "slurm_mpi.yaml.j2").read_text()
    out = rendered(template, {"partition": "compute", "account": "abc"})
    assert out.config.engine.type == "GlobusMPIEngine"
    assert out.config.engine.options["mpi_launcher"] == "srun"
    assert out.config.paths.endpoint_dir == "/scratch/alice/gc"
    assert out.config.heartbeat_period == 15.0
    assert out.config.engine.provider.build().launcher.__class__.__name__ == "SimpleLauncher"


def test_official_default_shape_renders_the_same_as_upstream():
    """Upstream renders a missing option with |default() as an empty (null) value."""
    out = rendered((DATA / "official_default_style.yaml.j2").read_text(), {})
    assert "endpoint_setup: \n" in out.yaml_text
    assert out.config.endpoint_setup is None
    assert "worker_init" not in out.config.engine.provider.options
    out = rendered((DATA / "official_default_style.yaml.j2").read_text(), {"worker_init": "x"})
    assert 'worker_init: "x"' in out.yaml_text
