# Build: release binary with the locked dependency set.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin wxtopup

# Run: a slim Debian with CA roots and zone data, as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata libcap2-bin \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin wxtopup \
 && mkdir -p /app/data && chown wxtopup /app/data
COPY --from=build /src/target/release/wxtopup /usr/local/bin/wxtopup
# Port 80 without root: grant only the bind capability to the binary.
RUN setcap 'cap_net_bind_service=+ep' /usr/local/bin/wxtopup \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY .env.production /app/.env.production
ENV APP_ENV=production
USER wxtopup
EXPOSE 80
CMD ["wxtopup", "serve"]
