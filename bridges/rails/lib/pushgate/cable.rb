# frozen_string_literal: true

require "json"
require "openssl"
require "uri"

module Pushgate
  # Settings for browsers that connect to the gateway's /cable with
  # @rails/actioncable or Turbo. Defaults come from the same environment
  # variables as the gateway's own flags.
  class Configuration
    attr_writer :cable_url, :turbo_streams_secret

    # Where browsers reach the gateway's Action Cable endpoint, e.g.
    # "wss://push.example.com/cable" (PUSHGATE_CABLE_URL).
    def cable_url
      defined?(@cable_url) ? @cable_url : ENV["PUSHGATE_CABLE_URL"]
    end

    # The key signed stream names are signed with: the gateway's
    # --turbo-streams-secret, and Rails' config.turbo.signed_stream_verifier_key
    # (PUSHGATE_TURBO_STREAMS_SECRET).
    def turbo_streams_secret
      defined?(@turbo_streams_secret) ? @turbo_streams_secret : ENV["PUSHGATE_TURBO_STREAMS_SECRET"]
    end
  end

  # Turbo's stream names and signatures, and the /cable URL with a token,
  # with the standard library only (no turbo-rails needed).
  module Cable
    # The Action Cable RPC endpoint (needs actioncable): see pushgate/cable/rpc.rb.
    autoload :RPC, "pushgate/cable/rpc"

    module_function

    # What Turbo streams from for `turbo_stream_from(*streamables)`: records as
    # their GlobalID parameter, anything else as its to_param, joined by ":".
    def stream_name_from(streamables)
      Array(streamables).flatten.map { |s| s.respond_to?(:to_gid_param) ? s.to_gid_param : s.to_param }.join(":")
    end

    # Byte for byte what Turbo::StreamsChannel.signed_stream_name renders when
    # config.turbo.signed_stream_verifier_key is the same secret:
    # ActiveSupport::MessageVerifier.new(secret, digest: "SHA256", serializer: JSON).
    def signed_stream_name(*streamables, secret: Pushgate.config.turbo_streams_secret)
      if secret.nil? || secret.empty?
        raise ArgumentError, "no Turbo streams secret configured (PUSHGATE_TURBO_STREAMS_SECRET, " \
                             "the gateway's --turbo-streams-secret)"
      end

      data = [JSON.generate(stream_name_from(streamables))].pack("m0")
      "#{data}--#{OpenSSL::HMAC.hexdigest("SHA256", secret, data)}"
    end

    # The cable URL with a fresh connection token for `user` in ?jid=, what
    # AnyCable-style `action-cable-url` meta tags carry.
    def url(user, ttl: Pushgate.config.token_ttl, channels: nil, base: Pushgate.config.cable_url)
      if base.nil? || base.empty?
        raise ArgumentError, "no cable URL configured (config.pushgate.cable_url or PUSHGATE_CABLE_URL, " \
                             "e.g. wss://push.example.com/cable)"
      end

      uri = URI(base)
      token = Pushgate.connection_token(user, ttl: ttl, channels: channels)
      query = URI.decode_www_form(uri.query.to_s).reject { |key, _| key == "jid" } << ["jid", token]
      uri.query = URI.encode_www_form(query)
      uri.to_s
    end
  end
end
