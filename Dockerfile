# Build: the production feature set (the default: SQLite and MySQL), with the locked dependencies.
# cargo-chef builds the dependencies from a recipe of the manifests first, in a layer of its own, so a
# cloud build that changes only this project's code reuses them instead of compiling every crate again.
FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
# Swagger UI's build script reads these while the dependencies are built (see .cargo/config.toml).
COPY .cargo .cargo
COPY swagger-ui-overwrite swagger-ui-overwrite
RUN cargo chef cook --release --locked --recipe-path recipe.json --package wxtopup --bin wxtopup
COPY . .
RUN cargo build --release --locked --package wxtopup --bin wxtopup

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
