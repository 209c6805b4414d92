# frozen_string_literal: true

module Pushgate
  # Settings, defaulting to the gateway's own environment variables so one
  # environment configures both sides.
  class Configuration
    attr_accessor :nsqd_http_address, :topic, :jwt_secret, :max_message_bytes,
                  :retries, :backoff, :open_timeout, :read_timeout, :token_ttl, :user_key

    def initialize(env = ENV)
      @nsqd_http_address = env.fetch("PUSHGATE_NSQD_HTTP_ADDRESS", "127.0.0.1:4151")
      @topic = env.fetch("PUSHGATE_TOPIC", "pushgate")
      @jwt_secret = env["PUSHGATE_JWT_SECRET"]
      @max_message_bytes = Integer(env.fetch("PUSHGATE_MAX_MESSAGE_BYTES", "65536"))
      @retries = 3          # after the first attempt, on connection errors and 5xx
      @backoff = 0.1        # seconds, doubled after each attempt
      @open_timeout = 2
      @read_timeout = 5
      @token_ttl = 3600
      # The user id in tokens and personal channels: a record's id, or the value itself.
      @user_key = ->(user) { user.respond_to?(:id) ? user.id.to_s : user.to_s }
    end
  end
end
