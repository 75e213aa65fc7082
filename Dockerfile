# The Vigo Enroll server image, built from source with a registry at hand:
#   docker build -t vigo-enroll .
# Without a registry (no golang base image to pull), `make image` builds the
# same image FROM scratch out of host-built binaries (Dockerfile.local).
# Both run .ci/image-rootfs.sh and share the final stage, line for line.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN bash .ci/image-rootfs.sh /rootfs "$VERSION"

# --- final stage (identical in Dockerfile.local) ---
FROM scratch
COPY --from=build /rootfs/ /
# The data folder alone belongs to the user the server runs as.
COPY --chown=10001:10001 --from=build /rootfs/srv/ /srv/
ENV VIGO_CONFIG_FILE=/etc/vigo/server.yaml \
    VIGO_CONTAINER=1 \
    VIGO_LOG_FORMAT=json \
    VIGO_ADMIN_TOKEN_FILE=/srv/vigo/admin.token \
    VIGO_CA_FILE=/srv/vigo/tls/ca \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PATH=/usr/local/bin
USER 10001:10001
WORKDIR /srv/vigo
VOLUME /srv/vigo
EXPOSE 8443 1530
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/vigosrv", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/vigosrv"]
CMD ["serve"]
