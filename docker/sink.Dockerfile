# A stand-in for Exchange: Postfix's smtp-sink, which accepts and discards mail.
# UNTESTED like the rest of docker/ (no Docker engine where Kala is developed).
FROM debian:bookworm-slim
RUN echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 25
CMD ["/usr/sbin/smtp-sink", "-u", "nobody", "-c", "0.0.0.0:25", "128"]
