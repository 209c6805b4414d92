# frozen_string_literal: true

require "json"
require "openssl"

module Pushgate
  # HS256 JWTs with the standard library, byte for byte as the gateway's
  # auth/tokens.py mints them (bridges/testdata/tokens.json): header
  # {"alg":"HS256","typ":"JWT"}, claims in the order sub, channel, iat, exp,
  # channels, info; compact JSON; base64url without padding.
  module Token
    DIGESTS = { "HS256" => "SHA256", "HS384" => "SHA384", "HS512" => "SHA512" }.freeze

    module_function

    def connection(secret, user, ttl:, channels: nil, info: nil, now: nil)
      claims = { "sub" => user.to_s }
      times(claims, ttl, now)
      claims["channels"] = channels.map(&:to_s) if channels && !channels.empty?
      claims["info"] = info unless info.nil?
      sign(claims, secret)
    end

    def subscription(secret, user, channel, ttl:, now: nil)
      claims = { "sub" => user.to_s, "channel" => channel.to_s }
      times(claims, ttl, now)
      sign(claims, secret)
    end

    def sign(claims, secret, algorithm = "HS256")
      raise ArgumentError, "no JWT secret configured (PUSHGATE_JWT_SECRET)" if secret.nil? || secret.empty?

      digest = DIGESTS.fetch(algorithm) { raise ArgumentError, "unsupported algorithm #{algorithm}" }
      input = "#{base64url(%({"alg":"#{algorithm}","typ":"JWT"}))}.#{base64url(JSON.generate(claims))}"
      "#{input}.#{base64url(OpenSSL::HMAC.digest(digest, secret, input))}"
    end

    def times(claims, ttl, now)
      issued = (now || Time.now).to_i
      claims["iat"] = issued
      claims["exp"] = issued + ttl.to_i if ttl
    end

    # [s].pack("m0"), not the base64 library: base64 is a bundled gem from Ruby 3.4.
    def base64url(bytes)
      [bytes].pack("m0").tr("+/", "-_").delete("=")
    end
  end
end
