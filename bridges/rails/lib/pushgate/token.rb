# frozen_string_literal: true

require "json"
require "openssl"

module Pushgate
  # HS256 JWTs with the standard library, byte for byte as the gateway's
  # auth/tokens.py mints them (bridges/testdata/tokens.json): header
  # {"alg":"HS256","typ":"JWT"}, claims in the order sub, channel, iat, exp,
  # channels, info; compact JSON; base64url without padding.
  #
  # A secret under 32 bytes is refused, as the gateway refuses it (RFC 7518
  # 3.2), and so is a ttl under one second; ttl nil never expires.
  module Token
    DIGESTS = { "HS256" => "SHA256", "HS384" => "SHA384", "HS512" => "SHA512" }.freeze
    MIN_SECRET_BYTES = 32

    module_function

    def connection(secret, user, ttl:, channels: nil, info: nil, now: nil)
      claims = { "sub" => user.to_s }
      times(claims, ttl, now)
      claims["channels"] = channels.map(&:to_s) if channels && !channels.empty?
      claims["info"] = info unless info.nil?
      sign(claims, secret)
    end

    def subscription(secret, user, channel, ttl:, now: nil)
      if channel.to_s.start_with?("#")
        # A personal channel is its owner's alone, subscribed server-side at
        # connect; the gateway refuses it whatever a token says.
        raise ArgumentError, "no subscription token for a personal channel (#{channel}): " \
                             "its user reads it server-side"
      end
      claims = { "sub" => user.to_s, "channel" => channel.to_s }
      times(claims, ttl, now)
      sign(claims, secret)
    end

    def sign(claims, secret, algorithm = "HS256")
      raise ArgumentError, "no JWT secret configured (PUSHGATE_JWT_SECRET)" if secret.nil? || secret.empty?
      if secret.bytesize < MIN_SECRET_BYTES
        raise ArgumentError, "the JWT secret is #{secret.bytesize} bytes: it must be at least " \
                             "#{MIN_SECRET_BYTES}, like the gateway's --jwt-secret"
      end

      digest = DIGESTS.fetch(algorithm) { raise ArgumentError, "unsupported algorithm #{algorithm}" }
      input = "#{base64url(%({"alg":"#{algorithm}","typ":"JWT"}))}.#{base64url(JSON.generate(claims))}"
      "#{input}.#{base64url(OpenSSL::HMAC.digest(digest, secret, input))}"
    end

    def times(claims, ttl, now)
      seconds = ttl_seconds(ttl)
      issued = (now || Time.now).to_i
      claims["iat"] = issued
      claims["exp"] = issued + seconds if seconds
    end

    # Whole seconds (10.minutes works too), or nil for a token that never expires.
    def ttl_seconds(ttl)
      return nil if ttl.nil?

      finite = !ttl.respond_to?(:finite?) || ttl.finite?
      seconds = ttl.to_i if finite && ttl.respond_to?(:to_i) && !ttl.is_a?(String)
      unless seconds && seconds >= 1
        raise ArgumentError, "ttl must be at least 1 second, or nil for a token that never expires: #{ttl.inspect}"
      end

      seconds
    end

    # [s].pack("m0"), not the base64 library: base64 is a bundled gem from Ruby 3.4.
    def base64url(bytes)
      [bytes].pack("m0").tr("+/", "-_").delete("=")
    end
  end
end
