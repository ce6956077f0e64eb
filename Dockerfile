# execd carrier image (execd-reference.md §1.5).
#
# The image only carries the static binary and bootstrap.sh; it is not the sandbox. Both
# injection flows copy them out unchanged:
#   Kubernetes:  an init container runs
#                /bin/sh -c "cp ./execd /opt/opensandbox/execd && cp ./bootstrap.sh /opt/opensandbox/bootstrap.sh && chmod +x ..."
#                (hence WORKDIR / and /bin/sh, cp, chmod in the final stage);
#   Docker:      the server creates a container with command `tail -f /dev/null` (so it runs
#                `/execd tail -f /dev/null`) and copies /execd and /bootstrap.sh out with
#                get_archive. Like Go's flag parsing, execd stops at the first non-flag word, ignores
#                the rest and keeps running.
#
#   docker build -t execd .
#
# The builder runs on the target platform, so `docker buildx build --platform linux/arm64` builds
# the aarch64 musl binary (scripts/build-static.sh picks the target from `uname -m`).

FROM rust:1-slim-bookworm AS builder
# readelf (binutils) and file let build-static.sh verify the binary is static; musl-tools
# compiles libzstd (zstd-sys, for tar.zst archives) for the musl target.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends file binutils musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# Same command as outside Docker: static, --locked, release profile, <= 8 MiB, or the build fails.
RUN bin="$(scripts/build-static.sh)" \
    && cp "$bin" /execd \
    && /execd --version \
    && cp scripts/bootstrap.sh /bootstrap.sh \
    && chmod 0755 /execd /bootstrap.sh

# busybox (musl flavour) supplies /bin/sh, cp, chmod and tail in ~1.5 MB.
FROM busybox:stable-musl
COPY --from=builder /execd /execd
COPY --from=builder /bootstrap.sh /bootstrap.sh
WORKDIR /
# execd stops on SIGTERM (and SIGINT): closes its listener, stops commands, finishes streams.
STOPSIGNAL SIGTERM
EXPOSE 44772
ENTRYPOINT ["/execd"]
