#!/usr/bin/env bash
# Create (or update) the LOGIN users of casebase's two NOLOGIN groups. Idempotent:
# run it after every `casebase db upgrade`; running it again changes nothing except the
# passwords, which it sets from the files each time (so it is also how you rotate them).
#
#   analyst  IN ROLE casebase_analyst, with statement_timeout (default 30s)
#   ingest   IN ROLE casebase_ingest
#
# The groups, their grants and the schema come from the migrations (`casebase db upgrade`,
# the compose `migrate` service); this script refuses to run before them. So does the
# third NOLOGIN role, casebase_owner, which owns the search functions: it never gets a
# login, and no login is made a member of it here.
#
# Connection: the libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE, and the superuser's
# password from PGPASSWORD or the file POSTGRES_PASSWORD_FILE (a Docker secret).
# Passwords of the users come from files (Docker secrets), never from the command line:
#   ANALYST_PASSWORD_FILE  default /run/secrets/analyst_password
#   INGEST_PASSWORD_FILE   default /run/secrets/ingest_password
# Names and the analyst's timeout can be changed:
#   ANALYST_USER (analyst), INGEST_USER (ingest), ANALYST_STATEMENT_TIMEOUT (30s)
set -euo pipefail

ANALYST_USER=${ANALYST_USER:-analyst}
INGEST_USER=${INGEST_USER:-ingest}
ANALYST_PASSWORD_FILE=${ANALYST_PASSWORD_FILE:-/run/secrets/analyst_password}
INGEST_PASSWORD_FILE=${INGEST_PASSWORD_FILE:-/run/secrets/ingest_password}
ANALYST_STATEMENT_TIMEOUT=${ANALYST_STATEMENT_TIMEOUT:-30s}
PSQL=${PSQL:-psql}

die() {
    echo "init-roles: $*" >&2
    exit 1
}

if [[ -z "${PGPASSWORD:-}" && -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
    [[ -r "$POSTGRES_PASSWORD_FILE" ]] || die "cannot read POSTGRES_PASSWORD_FILE=$POSTGRES_PASSWORD_FILE"
    PGPASSWORD=$(tr -d '\r\n' < "$POSTGRES_PASSWORD_FILE")
    export PGPASSWORD
fi

check_password_file() {
    local file=$1 what=$2 value
    [[ -r "$file" ]] || die "cannot read the $what password file $file (a Docker secret: copy docker/secrets/${what}_password.txt.example to docker/secrets/${what}_password.txt and set a password)"
    value=$(tr -d '\r\n' < "$file")
    [[ -n "$value" ]] || die "the $what password file $file is empty"
    case "$value" in
        change-me*) die "the $what password in $file is still the example placeholder: set a real one" ;;
    esac
}
check_password_file "$ANALYST_PASSWORD_FILE" analyst
check_password_file "$INGEST_PASSWORD_FILE" ingest

ready=$("$PSQL" -X -v ON_ERROR_STOP=1 -tAc \
    "SELECT (SELECT count(*) FROM pg_roles
             WHERE rolname IN ('casebase_analyst', 'casebase_ingest')) = 2
        AND to_regclass('public.alembic_version') IS NOT NULL
        AND to_regnamespace('casebase') IS NOT NULL") \
    || die "cannot connect to the database (PGHOST=${PGHOST:-} PGDATABASE=${PGDATABASE:-})"
[[ "$ready" == t ]] || die "database ${PGDATABASE:-} has no casebase schema yet: run \`casebase db upgrade\` (the migrate service) first"

# The passwords are read by psql itself (backquotes, trailing newline removed), so they
# never appear on a command line; log_statement is switched off for this session so that
# ALTER ROLE … PASSWORD is not written to the server log.
"$PSQL" -X -q -v ON_ERROR_STOP=1 \
    -v analyst_user="$ANALYST_USER" -v ingest_user="$INGEST_USER" \
    -v analyst_file="$ANALYST_PASSWORD_FILE" -v ingest_file="$INGEST_PASSWORD_FILE" \
    -v analyst_timeout="$ANALYST_STATEMENT_TIMEOUT" <<'SQL'
SET log_statement = 'none';
SET password_encryption = 'scram-sha-256';
\set analyst_pw `tr -d '\r\n' < :'analyst_file'`
\set ingest_pw `tr -d '\r\n' < :'ingest_file'`

BEGIN;

-- analyst: reads the views, calls the search functions; cannot write
SELECT format('CREATE ROLE %I LOGIN', :'analyst_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'analyst_user') \gexec
ALTER ROLE :"analyst_user" WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE
    NOREPLICATION NOBYPASSRLS PASSWORD :'analyst_pw';
SELECT format('GRANT casebase_analyst TO %I', :'analyst_user')
WHERE NOT pg_has_role(:'analyst_user', 'casebase_analyst', 'MEMBER') \gexec
-- The search functions cannot bound an analyst's own SQL (a cross join over the views,
-- a huge k): the role-level timeout is the guardrail, for every session of this user.
ALTER ROLE :"analyst_user" SET statement_timeout = :'analyst_timeout';
ALTER ROLE :"analyst_user" SET idle_in_transaction_session_timeout = '10min';

-- ingest: writes the tables, creates partitions through ensure_embedding_partition
SELECT format('CREATE ROLE %I LOGIN', :'ingest_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'ingest_user') \gexec
ALTER ROLE :"ingest_user" WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE
    NOREPLICATION NOBYPASSRLS PASSWORD :'ingest_pw';
SELECT format('GRANT casebase_ingest TO %I', :'ingest_user')
WHERE NOT pg_has_role(:'ingest_user', 'casebase_ingest', 'MEMBER') \gexec

-- casebase checks the schema revision on connect (SELECT from public.alembic_version);
-- both groups need to read it.
GRANT SELECT ON public.alembic_version TO casebase_analyst, casebase_ingest;

COMMIT;

SELECT format('init-roles: %s (casebase_analyst, statement_timeout %s) and %s (casebase_ingest) are ready',
              :'analyst_user', :'analyst_timeout', :'ingest_user') AS done \gset
\echo :done
SQL
