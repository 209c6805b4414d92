# frozen_string_literal: true

# Tokens for the browser's centrifuge client.
#
# GET /pushgate/token: the signed-in user's connection token (getToken calls
# it on connect and again when the token expires). Its `channels` are the
# shared channels this user reads server-side; the personal channel
# "#<id>" comes with every connection and needs no grant.
#
# GET /pushgate/subscription_token?channel=...: a token for one private
# channel, granted only from the explicit allow-list below. A channel the
# browser names is never signed as it comes, and a personal channel
# ("#...") never: it belongs to its user alone (the gateway refuses it
# anyway, whatever the token says).
class PushgateTokensController < ApplicationController
  before_action :authenticate_user! # your authentication

  # Private channels, each with the rule that decides who may read it.
  SUBSCRIBABLE = {
    "private:billing" => ->(user, _match) { user.admin? },
    /\Aprivate:team:(\d+)\z/ => ->(user, match) { user.team_id == match[1].to_i },
  }.freeze

  def show
    channels = ["news"]
    channels << "team:#{current_user.team_id}" if current_user.team_id
    render json: {
      token: Pushgate.connection_token(current_user, ttl: 10.minutes, channels: channels,
                                                     info: { name: current_user.name })
    }
  end

  def subscription
    channel = params.require(:channel)
    head :forbidden and return unless subscribable?(channel)

    render json: { token: Pushgate.subscription_token(current_user, channel, ttl: 10.minutes) }
  end

  private

  def subscribable?(channel)
    return false if channel.start_with?("#")

    SUBSCRIBABLE.any? do |pattern, allowed|
      match = pattern.is_a?(Regexp) ? pattern.match(channel) : (channel == pattern && channel)
      match && allowed.call(current_user, match)
    end
  end
end
