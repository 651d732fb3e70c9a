#!/bin/sh
# Entrypoint of the fasttask image: the first argument picks the role.
#
#   serve  [MODULE:APP] [flags]   exec fasttask serve  APP flags   (APP defaults to $FTAPI_APP)
#   worker [MODULE:APP] [flags]   exec fasttask worker APP flags
#   runpod [MODULE]               exec python -m MODULE with FTAPI_BACKEND=runpod (MODULE defaults to the module
#                                 part of $FTAPI_APP; the module must call app.start() under __main__)
#   anything else                 exec'd as given
set -eu

role="${1:-serve}"
if [ "$#" -gt 0 ]; then shift; fi
app="${FTAPI_APP:-}"

case "$role" in
    serve | worker)
        case "${1:-}" in
            -*) ;;
            *:*) app="$1"; shift ;;
        esac
        if [ -z "$app" ]; then
            echo "fasttask-entrypoint: set FTAPI_APP=module:app, or pass MODULE:APP after '$role'" >&2
            exit 2
        fi
        exec fasttask "$role" "$app" "$@"
        ;;
    runpod)
        module="${1:-${app%%:*}}"
        if [ -z "$module" ]; then
            echo "fasttask-entrypoint: set FTAPI_APP=module:app, or pass MODULE after 'runpod'" >&2
            exit 2
        fi
        FTAPI_BACKEND=runpod
        export FTAPI_BACKEND
        exec python -m "$module"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
