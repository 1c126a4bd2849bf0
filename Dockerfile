# Builds the yujing binary and a slim runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/yujing /usr/local/bin/yujing

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/yujing /usr/local/bin/yujing
USER nobody
ENTRYPOINT ["/usr/local/bin/yujing"]
