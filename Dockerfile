# Ferry's one image: `ferry control-plane`, `ferry proxy` and `ferry proxy-init` (the injected
# init container) all run this binary.
#
#   docker build -t ghcr.io/ferry-mesh/ferry:0.1.0 .
#
# The builder runs scripts/build-image.sh, which CI also runs outside a container.

# Pinned toolchain and Debian release; the build is --locked to Cargo.lock.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-image.sh /out

FROM ${RUNTIME_IMAGE}
# iptables brings iptables/ip6tables with both backends (iptables-nft and iptables-legacy);
# `ferry proxy-init` picks the one the node uses.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1337 ferry \
    && useradd --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=build /out/ferry /usr/local/bin/ferry
# The proxy's UID, which the redirect rules exempt; the init container runs as root by its
# own securityContext.
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/ferry"]
