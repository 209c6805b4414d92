# frozen_string_literal: true

# Every setting defaults to the gateway's own environment variable, so one
# environment (PUSHGATE_NSQD_HTTP_ADDRESS, PUSHGATE_TOPIC, PUSHGATE_JWT_SECRET)
# configures both sides. Override here when that is not enough.
Pushgate.configure do |c|
  c.nsqd_http_address = ENV.fetch("PUSHGATE_NSQD_HTTP_ADDRESS", "127.0.0.1:4151") # the nsqd next to this app
  c.topic = ENV.fetch("PUSHGATE_TOPIC", "pushgate")
  c.jwt_secret = ENV["PUSHGATE_JWT_SECRET"] || Rails.application.credentials.dig(:pushgate, :jwt_secret)
  c.token_ttl = 10.minutes
  c.user_key = ->(user) { user.respond_to?(:id) ? user.id.to_s : user.to_s } # personal channel "#<id>"
end

# Browsers open the gateway's /cable (action_cable_meta_tag renders this URL);
# Rails no longer serves /cable itself.
Rails.application.config.action_cable.url = ENV.fetch("PUSHGATE_CABLE_URL", "ws://localhost:8000/cable")
Rails.application.config.action_cable.mount_path = nil
