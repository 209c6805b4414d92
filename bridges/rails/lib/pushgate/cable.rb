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
    # The X-Socket-ID header in controllers (broadcasts to the others).
    autoload :SocketId, "pushgate/cable/socket_id"
    # Presence on a channel served through the RPC (anycable-rails' API).
    autoload :Presence, "pushgate/cable/action_cable_hooks"

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
    #
    # Nobody signed in (`user` nil, or a user whose key is empty) is an
    # ArgumentError, not a token for user "" (which the gateway refuses
    # without --allow-anonymous, and which would look like a sign-in bug):
    # say `anonymous: true` and a visitor gets the URL with no token at all.
    # The gateway then lets the app's Connection#connect decide over the RPC
    # (--cable-rpc-url), or accepts the visitor with --allow-anonymous, or
    # refuses the connection (a `disconnect`, "unauthorized").
    def url(user, ttl: Pushgate.config.token_ttl, channels: nil, base: Pushgate.config.cable_url, anonymous: false)
      if base.nil? || base.empty?
        raise ArgumentError, "no cable URL configured (config.pushgate.cable_url or PUSHGATE_CABLE_URL, " \
                             "e.g. wss://push.example.com/cable)"
      end

      uri = URI(base)
      query = URI.decode_www_form(uri.query.to_s).reject { |key, _| key == "jid" }
      if user.nil? || Pushgate.user_key(user).to_s.empty?
        unless anonymous
          raise ArgumentError, "nobody is signed in: Pushgate::Cable.url(nil) mints no token for user \"\"; pass " \
                               "anonymous: true for a visitor's URL without a token (the gateway serves it with " \
                               "--cable-rpc-url or --allow-anonymous)"
        end
      else
        query << ["jid", Pushgate.connection_token(user, ttl: ttl, channels: channels)]
      end
      uri.query = query.empty? ? nil : URI.encode_www_form(query)
      uri.to_s
    end
  end
end
