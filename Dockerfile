# syntax=docker/dockerfile:1
# parley in a container: built in the Rust image, run on a distroless base (no shell, no
# package manager) as the unprivileged user 65532 ("nonroot"). Data (the SQLite database, documents,
# the outbox, a generated master key) lives in /var/lib/parley: mount a volume there.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin parley \
    && install -D -m 0755 target/release/parley /out/parley \
    && install -d -m 0700 -o 65532 -g 65532 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/parley /usr/local/bin/parley
COPY --from=build --chown=65532:65532 /out/data /var/lib/parley
ENV PARLEY_DATA_DIR=/var/lib/parley \
    PARLEY_HTTP_ADDR=0.0.0.0:8080
WORKDIR /var/lib/parley
USER 65532:65532
EXPOSE 8080
VOLUME ["/var/lib/parley"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/parley", "health"]
ENTRYPOINT ["/usr/local/bin/parley"]
CMD ["serve"]
