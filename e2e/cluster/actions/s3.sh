# shellcheck shell=bash disable=SC2034
# Action s3: a real S3-compatible object store (SeaweedFS: master, volume,
# filer and S3 gateway in one process) on the host, reachable from pods at
# http://$HOST_IP:$S3_PORT, with the config's bucket and its credentials
# published as a Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_ENDPOINT_URL, AWS_REGION, S3_BUCKET) in the config's namespaces.

S3_DIR="$CLUSTER_DIR/s3"
# SeaweedFS's own ports, and their gRPC twins at +10000, sit below Linux's
# ephemeral range (32768-60999): a port in it can be taken at any moment by
# the local end of an outgoing connection (SeaweedFS's own among them), and
# the server then fails to bind.
S3_MASTER_PORT=19333
S3_VOLUME_PORT=18080
S3_FILER_PORT=18888

s3_credentials() {
  mkdir -p "$S3_DIR/data"
  chmod 700 "$S3_DIR"
  if [[ ! -s "$S3_DIR/credentials" ]]; then
    printf 'S3_ACCESS_KEY=kiln%s\nS3_SECRET_KEY=%s\n' \
      "$(openssl rand -hex 8)" "$(openssl rand -hex 20)" >"$S3_DIR/credentials"
  fi
  # shellcheck disable=SC1091
  source "$S3_DIR/credentials"
  cat >"$S3_DIR/s3.json" <<EOF
{"identities": [{"name": "kiln",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
}

s3_answers() { curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; }
s3_bucket_exists() {
  curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -o /dev/null -I "http://127.0.0.1:$S3_PORT/$S3_BUCKET/" 2>/dev/null
}

action_s3() {
  s3_credentials
  start_process seaweedfs "$WEED" server -dir "$S3_DIR/data" -ip 127.0.0.1 -ip.bind 0.0.0.0 -master.telemetry=false \
    -master.port "$S3_MASTER_PORT" -master.volumeSizeLimitMB 256 \
    -volume.port "$S3_VOLUME_PORT" -volume.max 16 \
    -filer -filer.port "$S3_FILER_PORT" \
    -s3 -s3.port "$S3_PORT" -s3.config "$S3_DIR/s3.json" -s3.port.iceberg 0 -s3.port.lance 0
  wait_process seaweedfs 120 s3_answers
  if ! s3_bucket_exists; then
    log "creating bucket $S3_BUCKET"
    local deadline=$((SECONDS + 60))
    until curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
      -X PUT -o /dev/null "http://127.0.0.1:$S3_PORT/$S3_BUCKET/" 2>/dev/null; do
      ((SECONDS < deadline)) || { tail -n 30 "$LOG_DIR/seaweedfs.log" >&2; die "creating bucket $S3_BUCKET failed"; }
      sleep 2
    done
  fi
  local ns
  for ns in $(yq -r '.s3.secretNamespaces[]' "$CONFIG"); do
    k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns" >/dev/null
    k -n "$ns" create secret generic "$S3_SECRET" \
      --from-literal "AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY" \
      --from-literal "AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY" \
      --from-literal "AWS_ENDPOINT_URL=http://$HOST_IP:$S3_PORT" \
      --from-literal "AWS_REGION=us-east-1" \
      --from-literal "S3_BUCKET=$S3_BUCKET" \
      --dry-run=client -o yaml | k apply -f - >/dev/null || die "publishing the S3 Secret in $ns failed"
  done
}
